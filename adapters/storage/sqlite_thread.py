"""The one thread that owns a SQLite connection: it runs read jobs, group-commits write jobs
and answers each job's asyncio future on the loop that submitted it.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from engine.errors import StoreCorrupted, StoreUnavailable

T = TypeVar("T")

# Primary result codes (https://sqlite.org/rescode.html) that retrying later may cure.
_TRANSIENT_CODES = frozenset({5, 6, 7, 8, 10, 13, 14, 15})  # BUSY LOCKED NOMEM READONLY IOERR
_TRANSIENT_WORDS = ("locked", "busy", "unable to open", "disk i/o", "disk is full", "closed")


def map_error(exc: sqlite3.Error) -> StoreUnavailable | StoreCorrupted:
    """The Butler error for a sqlite3 error: transient troubles versus data it cannot use."""
    code = getattr(exc, "sqlite_errorcode", None)
    text = str(exc).lower()
    if (code is not None and code & 0xFF in _TRANSIENT_CODES) or any(
        word in text for word in _TRANSIENT_WORDS
    ):
        return StoreUnavailable(f"sqlite: {exc}")
    return StoreCorrupted(f"sqlite: {exc}")


def _stop(conn: sqlite3.Connection) -> None:
    """Marks the job that closes the connection; never called."""


def _open(conn: sqlite3.Connection) -> None:
    """Marks the job that reports the opening of the connection; never called."""


@dataclass(slots=True, eq=False)
class _Job:
    work: Callable[[sqlite3.Connection], Any]
    write: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    outcome: Any = None
    error: BaseException | None = None


class DbThread:
    """Owns one connection on one thread; callers submit jobs and await their futures.

    The thread takes every job queued since its last pass as one batch and runs it in
    submission order in one transaction (group commit), each write job inside a savepoint so a
    failing job rolls back alone while the rest commit. So every job sees the effects of all
    jobs submitted before it. Futures are answered after the commit, in submission order, one
    wake-up of the loop per batch; if the commit itself fails, every job of the batch fails,
    reads included, since they may have seen the lost writes.
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection], *, name: str) -> None:
        self._connect = connect
        self._name = name
        self._queue: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._accepting = False
        self._refusal: str | None = None
        self._stopping: asyncio.Future[Any] | None = None
        self.write_batches = 0
        """Write transactions committed so far (tests use it to see group commit happen)."""

    async def start(self) -> None:
        """Open the connection on the thread.

        Raises:
            StoreUnavailable: the file cannot be opened.
            StoreCorrupted: the file is not a database this code can use.
        """
        opened = self._job(_open, write=False)
        self._thread = threading.Thread(
            target=self._run, args=(opened,), name=self._name, daemon=True
        )
        self._thread.start()
        try:
            await opened.future
        except sqlite3.Error as exc:
            raise map_error(exc) from exc
        except asyncio.CancelledError:
            self._queue.put(self._job(_stop, write=False))  # the thread closes what it opens
            raise
        self._accepting = True

    def submit(self, work: Callable[[sqlite3.Connection], T], *, write: bool) -> asyncio.Future[T]:
        """Queue `work` without waiting; the future holds its outcome or its raw error."""
        if not self._accepting:
            raise StoreUnavailable(self._refusal or "the store is closed")
        job = self._job(work, write=write)
        self._queue.put(job)
        return job.future

    async def call(self, work: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        """Run `work` on the thread as one job and return its outcome.

        Raises:
            StoreUnavailable: the store is closed, busy or its disk failed.
            StoreCorrupted: SQLite refused the data or could not read the file.
        """
        future = self.submit(work, write=write)
        try:
            return await future
        except sqlite3.Error as exc:
            raise map_error(exc) from exc

    def refuse(self, reason: str) -> None:
        """Take no more jobs (jobs already queued still run); `reason` is the error's text."""
        self._refusal = reason
        self._accepting = False

    async def stop(self) -> None:
        """Finish every queued job, close the connection and join the thread."""
        self._refusal = None
        if self._thread is None or not self._thread.is_alive():
            self._accepting = False
            return
        if self._stopping is None:
            self._accepting = False
            job = self._job(_stop, write=False)
            self._stopping = job.future
            self._queue.put(job)
        await asyncio.shield(self._stopping)
        if self._thread is not None:
            self._thread.join()

    @staticmethod
    def _job(work: Callable[[sqlite3.Connection], Any], *, write: bool) -> _Job:
        loop = asyncio.get_running_loop()
        return _Job(work, write, loop, loop.create_future())

    def _run(self, opened: _Job) -> None:
        try:
            conn = self._connect()
        except Exception as exc:  # noqa: BLE001 - handed to the task awaiting start()
            opened.error = exc
            _settle([opened])
            return
        _settle([opened])
        stops = self._serve(conn)
        with contextlib.suppress(sqlite3.Error):
            conn.close()
        _settle(stops)

    def _serve(self, conn: sqlite3.Connection) -> list[_Job]:
        """Run batches until a stop job arrives; return the stop jobs, still unanswered."""
        while True:
            batch = [self._queue.get()]
            with contextlib.suppress(queue.Empty):
                while True:
                    batch.append(self._queue.get_nowait())
            stops = [job for job in batch if job.work is _stop]
            jobs = [job for job in batch if job.work is not _stop]
            if jobs and _run_batch(conn, jobs):
                self.write_batches += 1
            _settle(jobs)
            if stops:
                return stops


def _run_batch(conn: sqlite3.Connection, jobs: list[_Job]) -> bool:
    """Run `jobs` in order in one transaction; True if it wrote and committed."""
    writes = any(job.write for job in jobs)
    try:
        conn.execute("BEGIN IMMEDIATE" if writes else "BEGIN")
        for job in jobs:
            if job.write:
                _run_write(conn, job)
            else:
                job.error = _attempt(job, conn)
            if job.error is not None and not conn.in_transaction:
                # SQLite dropped the whole transaction (disk full, I/O error): the batch is lost.
                _fail_batch(conn, jobs, job.error)
                return False
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        _fail_batch(conn, jobs, exc)
        return False
    return writes


def _run_write(conn: sqlite3.Connection, job: _Job) -> None:
    """Run a write job inside its own savepoint, so that if it fails it rolls back alone."""
    conn.execute("SAVEPOINT job")
    job.error = _attempt(job, conn)
    if not conn.in_transaction:
        return
    if job.error is not None:
        conn.execute("ROLLBACK TO job")
    conn.execute("RELEASE job")


def _attempt(job: _Job, conn: sqlite3.Connection) -> Exception | None:
    """Run one job, keeping its outcome; return its error instead of raising it."""
    try:
        job.outcome = job.work(conn)
    except Exception as exc:  # noqa: BLE001 - handed to the task awaiting the job
        return exc
    return None


def _fail_batch(conn: sqlite3.Connection, jobs: list[_Job], exc: BaseException) -> None:
    """The transaction failed as a whole: roll it back and give every job without an error
    of its own the transaction's error."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
    for job in jobs:
        if job.error is None:
            job.outcome = None
            job.error = exc


def _settle(jobs: list[_Job]) -> None:
    """Answer the jobs' futures on their loops, one wake-up per loop, in submission order."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Job]] = {}
    for job in jobs:
        by_loop.setdefault(job.loop, []).append(job)
    for loop, loop_jobs in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            loop.call_soon_threadsafe(_resolve, loop_jobs)


def _resolve(jobs: list[_Job]) -> None:
    for job in jobs:
        if job.future.done():  # the caller was cancelled; a write may still have committed
            continue
        if job.error is not None:
            job.future.set_exception(job.error)
        else:
            job.future.set_result(job.outcome)
