"""`OpenAIChatModel`: the LanguageModel port over OpenAI-compatible `/chat/completions` servers.

Owns one aiohttp session, the endpoint fallback chain, jittered retries, and the mapping of
HTTP and transport failures onto `engine.errors`.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import random as _random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from engine.errors import LLMRejected, LLMUnavailable
from engine.ports import Completion, CompletionRequest

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[object]]

# Worth asking the same endpoint again after a pause.
_TRANSIENT_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
# The endpoint is misconfigured for us (key, path, model name): the next one may be fine.
_ENDPOINT_STATUS = frozenset({401, 403, 404, 405})
_AUTH_STATUS = frozenset({401, 403})
# The request itself is bad: every endpoint would refuse it the same way.
_REQUEST_STATUS = frozenset({400, 413, 422})
_RETRY_AFTER_STATUS = frozenset({429, 503})


@dataclass(frozen=True, slots=True)
class LLMSettings:
    """Where the OpenAI-compatible endpoints are and how patiently to talk to them.

    `urls` are base URLs such as `http://127.0.0.1:8080/v1`, tried in order. An empty `model`
    means "whatever the endpoint's `/models` lists first", or `default`.
    """

    urls: tuple[str, ...]
    model: str = ""
    api_key: str = field(default="", repr=False)
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 60.0
    total_timeout_s: float = 90.0
    retries: int = 2
    backoff_base_s: float = 0.25
    backoff_cap_s: float = 4.0
    retry_after_cap_s: float = 4.0
    probe_timeout_s: float = 5.0
    max_connections: int = 32
    keepalive_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("LLMSettings.urls needs at least one endpoint")
        if self.retries < 0:
            raise ValueError("LLMSettings.retries cannot be negative")


class _Verdict(enum.Enum):
    RETRY = "retry"  # transient: the same endpoint may answer after a pause
    NEXT = "next"  # this endpoint cannot serve us now: go down the chain
    REFUSED = "refused"  # this endpoint refuses us (key, path, model): go down the chain
    REJECT = "reject"  # the request is at fault: stop


class _AttemptError(Exception):
    """One attempt on one endpoint failed; the message holds no URL and no message text.

    `error_type` is the span's `error.type`: the HTTP status, `timeout`, the transport
    error's class, or `malformed_response`.
    """

    def __init__(
        self,
        reason: str,
        verdict: _Verdict,
        retry_after: float | None = None,
        *,
        error_type: str = "",
    ) -> None:
        super().__init__(reason)
        self.verdict = verdict
        self.error_type = error_type or reason
        self.retry_after = retry_after


class OpenAIChatModel:
    """A `LanguageModel` backed by a chain of OpenAI-compatible HTTP endpoints.

    Statuses 408/409/425/429/5xx, timeouts, dropped connections and malformed bodies are
    retried on the same endpoint, then the next one is tried. 401/403/404/405 mean the
    endpoint is misconfigured for us and the chain moves on at once (`LLMRejected` only if
    every endpoint refuses so). 400/413/422 mean the request is bad and raise `LLMRejected`
    without asking anyone else.
    """

    def __init__(
        self,
        *,
        settings: LLMSettings,
        sleep: Sleep | None = None,
        random: Callable[[], float] | None = None,
    ) -> None:
        self._settings = settings
        # Backoff between retries is the one timed wait an HTTP client cannot avoid.
        self._sleep: Sleep = sleep or asyncio.sleep  # noqa: TID251
        # Jitter spreads retries; it needs no cryptographic quality.
        self._random = random or _random.Random().random  # noqa: S311
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._models: dict[int, str] = {}
        self.problem: str | None = None  # why the last probe failed, in words, when known
        self._timeout = aiohttp.ClientTimeout(
            total=settings.total_timeout_s,
            sock_connect=settings.connect_timeout_s,
            sock_read=settings.read_timeout_s,
        )
        self._probe_timeout = aiohttp.ClientTimeout(
            total=settings.probe_timeout_s, sock_connect=settings.connect_timeout_s
        )
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if settings.api_key:
            self._headers["Authorization"] = f"Bearer {settings.api_key}"

    async def start(self) -> None:
        """Open the HTTP session now rather than on the first request."""
        self._ensure_session()

    async def close(self) -> None:
        """Close the session and its pooled connections; the adapter cannot be used after."""
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def complete(self, request: CompletionRequest) -> Completion:
        """Ask the chain for a completion, endpoint by endpoint.

        Raises:
            LLMRejected: the request was refused as malformed (400/413/422), or every
                endpoint refused us for its configuration (401/403/404/405).
            LLMUnavailable: no endpoint answered, for transient reasons on at least one.
        """
        session = self._ensure_session()
        failures: list[_AttemptError] = []
        for index, base in enumerate(self._settings.urls):
            try:
                return await self._complete_on(session, index, base, request)
            except _AttemptError as failure:
                if failure.verdict is _Verdict.REJECT:
                    raise LLMRejected(
                        f"LLM endpoint {index} rejected the request: {failure}"
                    ) from failure
                log.warning("LLM endpoint %d gave up: %s", index, failure)
                failures.append(failure)
        last = failures[-1]
        message = f"all {len(failures)} LLM endpoint(s) failed; endpoint {index}: {last}"
        if all(f.verdict is _Verdict.REFUSED for f in failures):
            # Every endpoint refused us for its configuration: waiting will not help.
            raise LLMRejected(message) from last
        raise LLMUnavailable(message) from last

    async def probe(self) -> bool:
        """Whether the primary endpoint answers now: `/models`, else a one-token completion.

        One request (two when `/models` is 404), a short timeout, no retries; never raises
        except for cancellation.
        """
        session = self._ensure_session()
        base = self._settings.urls[0]
        self.problem = None
        try:
            status, model_id = await self._list_models(session, base)
            if status == 404:
                status = await self._probe_chat(session, base)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.info("LLM probe of endpoint 0 failed: %s", type(exc).__name__)
            return False
        if status in _AUTH_STATUS:
            self.problem = _auth_hint(status, bool(self._settings.api_key))
            return False
        if model_id and not self._settings.model:
            self._models[0] = model_id
        return 200 <= status < 300

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("OpenAIChatModel used after close()")
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._settings.max_connections,
                limit_per_host=self._settings.max_connections,
                keepalive_timeout=self._settings.keepalive_s,
                ttl_dns_cache=300,
            )
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, raise_for_status=False
            )
        return self._session

    async def _complete_on(
        self,
        session: aiohttp.ClientSession,
        index: int,
        base: str,
        request: CompletionRequest,
    ) -> Completion:
        url = _join(base, "chat/completions")
        retries = self._settings.retries
        for attempt in range(retries + 1):
            try:
                return await self._attempt(session, index, base, url, request)
            except _AttemptError as failure:
                if failure.verdict is not _Verdict.RETRY or attempt == retries:
                    raise
                delay = self._backoff(attempt, failure.retry_after)
                if delay is None:
                    raise _AttemptError(
                        f"{failure}; Retry-After {failure.retry_after:g}s is too long",
                        _Verdict.NEXT,
                        failure.retry_after,
                    ) from failure
                log.info(
                    "LLM endpoint %d attempt %d/%d failed (%s); retrying in %.2fs",
                    index,
                    attempt + 1,
                    retries + 1,
                    failure,
                    delay,
                )
                await self._sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _attempt(
        self,
        session: aiohttp.ClientSession,
        index: int,
        base: str,
        url: str,
        request: CompletionRequest,
    ) -> Completion:
        """One attempt on one endpoint (finding its model first, when not configured).

        One CLIENT span per attempt, named and described as the OpenTelemetry GenAI
        conventions ask; no message text, and no URL path or query (a gateway key may be
        there).
        """
        parts = urlsplit(url)
        known = self._settings.model or self._models.get(index, "")
        tracer = trace.get_tracer("butler.llm")
        with tracer.start_as_current_span(
            f"chat {known}" if known else "chat", kind=SpanKind.CLIENT
        ) as span:
            span.set_attributes(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "openai",  # the API spoken; the server may be any
                    "gen_ai.request.max_tokens": request.max_tokens,
                    "gen_ai.request.temperature": request.temperature,
                    "server.address": parts.hostname or "",
                    "server.port": parts.port or (443 if parts.scheme == "https" else 80),
                    "butler.llm.endpoint": index,
                }
            )
            try:
                model = await self._model_for(session, index, base)
                span.update_name(f"chat {model}")
                span.set_attribute("gen_ai.request.model", model)
                completion = await self._post(session, index, url, _encode(request, model), model)
            except _AttemptError as failure:
                span.set_attribute("error.type", failure.error_type)
                span.set_status(StatusCode.ERROR, failure.error_type)
                raise
            span.set_attributes(
                {
                    "gen_ai.response.model": completion.model,
                    "gen_ai.usage.input_tokens": completion.prompt_tokens,
                    "gen_ai.usage.output_tokens": completion.completion_tokens,
                }
            )
            return completion

    async def _post(
        self,
        session: aiohttp.ClientSession,
        index: int,
        url: str,
        body: bytes,
        model: str,
    ) -> Completion:
        try:
            async with session.post(url, data=body, headers=self._headers) as response:
                status = response.status
                retry_after = response.headers.get("Retry-After")
                payload = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _transport_failure(exc) from exc
        if not 200 <= status < 300:
            raise _status_failure(status, retry_after, has_key=bool(self._settings.api_key))
        return _decode_completion(payload, index, model)

    def _backoff(self, attempt: int, retry_after: float | None) -> float | None:
        """Full-jitter exponential backoff, or the server's Retry-After when it is short.

        Returns None when the server asks for a longer pause than `retry_after_cap_s`.
        """
        if retry_after is not None:
            return retry_after if retry_after <= self._settings.retry_after_cap_s else None
        ceiling = min(self._settings.backoff_cap_s, self._settings.backoff_base_s * 2.0**attempt)
        return self._random() * ceiling

    async def _model_for(self, session: aiohttp.ClientSession, index: int, base: str) -> str:
        if self._settings.model:
            return self._settings.model
        cached = self._models.get(index)
        if cached is not None:
            return cached
        try:
            status, model_id = await self._list_models(session, base)
        except (aiohttp.ClientError, TimeoutError) as exc:
            failure = _transport_failure(exc)
            raise _AttemptError(
                f"models: {failure}", failure.verdict, error_type=failure.error_type
            ) from exc
        if status in _TRANSIENT_STATUS:
            raise _AttemptError(f"models: status {status}", _Verdict.RETRY, error_type=str(status))
        resolved = model_id or "default"
        if 200 <= status < 300 or status in {404, 405}:
            # Remember what the endpoint serves, or that it cannot tell us.
            self._models[index] = resolved
        return resolved

    async def _list_models(
        self, session: aiohttp.ClientSession, base: str
    ) -> tuple[int, str | None]:
        """GET `{base}/models`: the status and the first model id listed, if any."""
        async with session.get(
            _join(base, "models"), headers=self._headers, timeout=self._probe_timeout
        ) as response:
            status = response.status
            payload = await response.read()
        if not 200 <= status < 300:
            return status, None
        try:
            model_id = json.loads(payload)["data"][0]["id"]
        except (ValueError, KeyError, IndexError, TypeError):
            return status, None
        return status, model_id if isinstance(model_id, str) and model_id else None

    async def _probe_chat(self, session: aiohttp.ClientSession, base: str) -> int:
        """A one-token completion: its status, or 502 for an answer that is not one."""
        model = self._settings.model or self._models.get(0, "default")
        body = json.dumps(
            {
                "model": model,
                "messages": [{"role": "user", "content": "ping"}],
                "max_tokens": 1,
                "temperature": 0.0,
                "stream": False,
            }
        ).encode()
        async with session.post(
            _join(base, "chat/completions"),
            data=body,
            headers=self._headers,
            timeout=self._probe_timeout,
        ) as response:
            status = response.status
            payload = await response.read()
        if not 200 <= status < 300:
            return status
        try:
            _decode_completion(payload, 0, model)
        except _AttemptError:
            return 502
        return status


def _encode(request: CompletionRequest, model: str) -> bytes:
    return json.dumps(
        {
            "model": model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stream": False,
        },
        ensure_ascii=False,
    ).encode()


def _decode_completion(payload: bytes, index: int, model: str) -> Completion:
    """Map a chat-completions body onto `Completion`; an unusable body is a transient failure."""
    try:
        data: Any = json.loads(payload)
        content = data["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise _AttemptError(
            "malformed response", _Verdict.RETRY, error_type="malformed_response"
        ) from exc
    if not isinstance(content, str):
        raise _AttemptError(
            "malformed response: no text content",
            _Verdict.RETRY,
            error_type="malformed_response",
        )
    usage = data.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    answered_by = data.get("model")
    return Completion(
        text=content.strip(),
        model=answered_by if isinstance(answered_by, str) and answered_by else model,
        endpoint=index,
        prompt_tokens=_count(usage.get("prompt_tokens")),
        completion_tokens=_count(usage.get("completion_tokens")),
    )


def _transport_failure(exc: aiohttp.ClientError | TimeoutError) -> _AttemptError:
    """Timeouts and broken connections are worth a retry; other client errors are not."""
    name = type(exc).__name__
    if isinstance(exc, TimeoutError):
        return _AttemptError("timeout", _Verdict.RETRY, error_type="timeout")
    if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError):
        return _AttemptError(f"connection: {name}", _Verdict.RETRY, error_type=name)
    return _AttemptError(f"client: {name}", _Verdict.NEXT, error_type=name)


def _auth_hint(status: int, has_key: bool) -> str:
    """What to do about a 401/403: the one setting that holds the key."""
    if has_key:
        return f"status {status}: the server refused the key in BUTLER_LLM_API_KEY"
    return f"status {status}: the server wants an API key; set BUTLER_LLM_API_KEY"


def _status_failure(status: int, retry_after: str | None, *, has_key: bool) -> _AttemptError:
    reason = _auth_hint(status, has_key) if status in _AUTH_STATUS else f"status {status}"
    code = str(status)
    if status in _REQUEST_STATUS:
        return _AttemptError(reason, _Verdict.REJECT, error_type=code)
    if status in _TRANSIENT_STATUS:
        wait = _parse_retry_after(retry_after) if status in _RETRY_AFTER_STATUS else None
        return _AttemptError(reason, _Verdict.RETRY, wait, error_type=code)
    if status in _ENDPOINT_STATUS:
        return _AttemptError(reason, _Verdict.REFUSED, error_type=code)
    # Other 4xx and unknown 5xx: unexplained, so not worth a retry, but not the request's fault.
    return _AttemptError(reason, _Verdict.NEXT, error_type=code)


def _parse_retry_after(value: str | None) -> float | None:
    """Delta-seconds only; an HTTP-date is ignored and ordinary backoff applies."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return max(seconds, 0.0)


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _join(base: str, suffix: str) -> str:
    """Append a path segment to a base URL, keeping its query (some gateways need one)."""
    parts = urlsplit(base)
    path = f"{parts.path.rstrip('/')}/{suffix}"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))
