"""The one HTTP client of the admin API: `butler admin` verbs and the memory worker's requests.

A refused connection (no service runs) is `ServiceUnreachable`, so callers fall back to the
store; an answer that is not Butler's admin API is `NotButler`; an error status is
`AdminRequestFailed`.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import aiohttp

from actors.memory_worker import Candidate, RequestFailed, ServiceAbsent

ADMIN_HEADER = "X-Butler-Admin"  # what the admin server puts on every answer


class ServiceUnreachable(Exception):
    """No admin server answers at the URL (no service runs): use the store directly."""


class NotButler(ServiceUnreachable):
    """Something answers at the URL, but not Butler's admin API (a wrong BUTLER_ADMIN_URL)."""


class AdminRequestFailed(Exception):
    """The server answered with an error status (unauthorized, not found, invalid input)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class AdminClient:
    """Calls the admin API with the bearer token. Use as `async with AdminClient(...)`."""

    def __init__(self, url: str, token: str, *, timeout_s: float = 35.0) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=min(timeout_s, 3.0))
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)
        return self._session

    async def call(
        self, method: str, path: str, body: Any = None, *, params: dict[str, str] | None = None
    ) -> Any:
        """The JSON answer of `method path`.

        Raises:
            ServiceUnreachable: nothing listens at the URL.
            NotButler: the answer is not JSON from Butler's admin API.
            AdminRequestFailed: the server answered with a 4xx/5xx status.
        """
        session = self._open()
        try:
            async with session.request(method, self.url + path, json=body, params=params) as res:
                if ADMIN_HEADER not in res.headers:  # another server's JSON 404 is no answer
                    raise NotButler(
                        f"{self.url} answered {res.status} but is not a Butler admin API"
                    )
                if "application/json" not in res.headers.get("Content-Type", ""):
                    raise NotButler(
                        f"{self.url} answered {res.status} without JSON: not a Butler admin API"
                    )
                data = await res.json(content_type=None)
                if res.status >= 400:
                    message = data.get("error", "") if isinstance(data, dict) else ""
                    raise AdminRequestFailed(res.status, message or res.reason or "")
                return data
        except aiohttp.ClientConnectorError as exc:
            raise ServiceUnreachable(f"no admin server at {self.url}") from exc
        except aiohttp.ContentTypeError as exc:
            raise NotButler(f"{self.url} did not answer JSON: not a Butler admin API") from exc


class AdminRequester:
    """The memory worker's requester over the admin API:
    `POST /admin/actors/{user_id}/compress` -> 202 (`?eager=1` for an idle user).

    A refused connection raises `ServiceAbsent`; any other failure `RequestFailed`.
    """

    def __init__(self, client: AdminClient) -> None:
        self._client = client

    async def request(self, candidate: Candidate) -> None:
        path = f"/admin/actors/{quote(candidate.user_id, safe='')}/compress"
        params = {"eager": "1"} if candidate.eager else None
        try:
            await self._client.call("POST", path, params=params)
        except NotButler as exc:
            raise RequestFailed(str(exc)) from exc
        except ServiceUnreachable as exc:
            raise ServiceAbsent(str(exc)) from exc
        except AdminRequestFailed as exc:
            raise RequestFailed(f"admin API answered {exc.status}") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RequestFailed(f"admin API failed: {type(exc).__name__}") from exc
