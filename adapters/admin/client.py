"""The admin API's client for `butler admin`: a running service first, the store otherwise."""

from __future__ import annotations

from typing import Any

import aiohttp


class ServiceUnreachable(Exception):
    """No admin server answers at the URL (no service runs): use the store directly."""


class AdminRequestFailed(Exception):
    """The server answered with an error status (unauthorized, not found, invalid input)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class AdminClient:
    """Calls the admin API with the bearer token. Use as `async with AdminClient(...)`."""

    def __init__(self, url: str, token: str, *, timeout_s: float = 35.0) -> None:
        self._url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=2.0)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AdminClient:
        self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """The JSON answer of `method path`.

        Raises:
            ServiceUnreachable: nothing listens at the URL.
            AdminRequestFailed: the server answered with a 4xx/5xx status.
        """
        assert self._session is not None, "use AdminClient as an async context manager"
        try:
            async with self._session.request(method, self._url + path, json=body) as res:
                data = await res.json(content_type=None)
                if res.status >= 400:
                    message = data.get("error", "") if isinstance(data, dict) else ""
                    raise AdminRequestFailed(res.status, message or res.reason or "")
                return data
        except aiohttp.ClientConnectorError as exc:
            raise ServiceUnreachable(f"no admin server at {self._url}") from exc
