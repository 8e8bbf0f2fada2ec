"""The workstation's HTTP client for the central server (httpx, async).

Failures are sorted into what the sync engine does about them:
:class:`Offline` (cannot reach the server: back off and retry),
:class:`ServerBusy` (503 or another 5xx: back off and retry),
:class:`Unauthorised` (401: log in again), :class:`Refused` (any other 4xx:
a clear message for the clerk).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from domain.leases import Lease

from .protocol import (
    CONFIRMED_HEADER,
    CURSOR_HEADER,
    DEVICE_HEADER,
    EPOCH_HEADER,
    LEASE_HEADER,
    MARK_HEADER,
    EnrollRequest,
    EnrollResponse,
    LeaseGrant,
    LeaseRequest,
    LeasesHeld,
    LeasesKept,
    LoginRequest,
    LoginResponse,
    PullResponse,
    PushRequest,
    PushResponse,
    SnapshotImageInfo,
)

T = TypeVar("T", bound=BaseModel)


@dataclass(frozen=True)
class ReplicaMark:
    """Where a workstation's replica stands: sent with each push."""

    epoch: str
    cursor: int
    mark: str | None
    confirmed: int
    newest_lease: str | None = None

    def headers(self) -> dict[str, str]:
        headers = {
            EPOCH_HEADER: self.epoch,
            CURSOR_HEADER: str(self.cursor),
            CONFIRMED_HEADER: str(self.confirmed),
        }
        if self.mark:
            headers[MARK_HEADER] = self.mark
        if self.newest_lease:
            headers[LEASE_HEADER] = self.newest_lease
        return headers


class SyncError(Exception):
    def __init__(
        self,
        code: str,
        message_zh: str,
        message_en: str,
        status: int | None = None,
        detail: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message_en)
        self.code, self.message_zh, self.message_en, self.status = (
            code,
            message_zh,
            message_en,
            status,
        )
        self.detail = detail  # the server's details of a refusal, when it gave any
        self.retry_after = retry_after  # seconds, from the answer's Retry-After

    def message(self, lang: str) -> str:
        return self.message_en if lang.startswith("en") else self.message_zh


class Offline(SyncError):
    pass


class ServerBusy(SyncError):
    pass


class Unauthorised(SyncError):
    pass


class Refused(SyncError):
    pass


class SyncClient:
    def __init__(
        self,
        base_url: str,
        *,
        device_token: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 15.0,
        cafile: str | None = None,
    ) -> None:
        """``cafile``: the certificate(s), PEM, of a private certificate
        authority that signed an https:// server's certificate (instead of
        the system's trusted authorities)."""
        self.base_url = base_url.rstrip("/")
        self.device_token = device_token
        self.session_token: str | None = None
        # the roles of the clerk whose session this is (None: not known)
        self.roles: frozenset[str] | None = None
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=cafile) if cafile is not None else True
        )
        self._http = httpx.AsyncClient(
            base_url=self.base_url, transport=transport, timeout=timeout, verify=verify
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def _headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.device_token:
            headers[DEVICE_HEADER] = self.device_token
        if self.session_token:
            headers["Authorization"] = f"Bearer {self.session_token}"
        return headers

    async def _request(
        self,
        method: str,
        path: str,
        json_body: bool = False,
        extra_headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        headers = self._headers() | (extra_headers or {})
        if json_body:
            headers["Content-Type"] = "application/json"
        try:
            response = await self._http.request(method, path, headers=headers, **kwargs)
        except (httpx.TransportError, OSError) as exc:
            raise Offline(
                "offline",
                "无法连接中心服务器。",
                f"Cannot reach the central server ({type(exc).__name__}).",
            ) from exc
        _raise_for(response)
        return response

    async def _call(self, method: str, path: str, model: type[T], **kwargs: Any) -> T:
        response = await self._request(method, path, **kwargs)
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise ServerBusy(
                "bad_response", "服务器应答无法识别。", "The server's answer was not understood."
            ) from exc

    async def health(self) -> dict[str, Any]:
        response = await self._request("GET", "/health")
        return dict(response.json())

    async def reachable(self, timeout_s: float) -> bool:
        """Whether the server answers at all (any answer: the link is up), within
        ``timeout_s``: the cheap question a workstation asks while offline."""
        try:
            await self._http.get("/health", timeout=timeout_s)
        except (httpx.TransportError, OSError):
            return False
        return True

    async def enroll(self, code: str, device_name: str) -> EnrollResponse:
        body = EnrollRequest(code=code, device_name=device_name).model_dump()
        return await self._call("POST", "/devices/enroll", EnrollResponse, json=body)

    async def login(
        self,
        username: str,
        password: str,
        *,
        signing_key: bytes | None = None,
        unsigned_through: int | None = None,
    ) -> LoginResponse:
        """Log in; with ``signing_key`` (the clerk's public key on this
        workstation) the server records it for the clerk (``domain.signing``)."""
        body = LoginRequest(
            username=username,
            password=password,
            signing_key=signing_key.hex() if signing_key is not None else None,
            unsigned_through=unsigned_through,
        ).model_dump(exclude_none=True)
        answer = await self._call("POST", "/auth/login", LoginResponse, json=body)
        self.session_token = answer.session_token
        self.roles = frozenset(answer.clerk.roles)
        return answer

    async def logout(self) -> None:
        if self.session_token:
            try:
                await self._request("POST", "/auth/logout")
            finally:
                self.session_token = None
                self.roles = None

    async def lease(self, kind: str, resource: str, count: int) -> Lease:
        body = LeaseRequest(kind=kind, resource=resource, count=count).model_dump()
        grant = await self._call("POST", "/leases", LeaseGrant, json=body)
        return grant.lease()

    async def push(self, request: PushRequest, replica: ReplicaMark | None = None) -> PushResponse:
        """Push operations. With ``replica`` (where this workstation's replica
        stands), a server of another epoch or behind the replica refuses with
        ``epoch_changed`` or ``server_behind`` before applying anything."""
        return await self._call(
            "POST",
            "/sync/push",
            PushResponse,
            # what is as by default (withdrawn: false) is left out: fewer bytes a push
            content=request.model_dump_json(exclude_defaults=True).encode(),
            json_body=True,
            extra_headers=replica.headers() if replica is not None else None,
        )

    async def leases_held(self, held: list[Lease]) -> LeasesKept:
        """Tell the server again the number blocks this workstation holds."""
        body = LeasesHeld(leases=[LeaseGrant.of(lease) for lease in held]).model_dump()
        return await self._call("POST", "/leases/held", LeasesKept, json=body)

    async def pull(
        self,
        cursor: int,
        limit: int,
        *,
        mark: str | None = None,
        confirmed: int | None = None,
        epoch: str | None = None,
    ) -> PullResponse:
        """Rows after ``cursor``. With ``mark`` (the fingerprint of the change at
        the cursor) and ``confirmed`` (this device's last confirmed operation),
        a server of the same ``epoch`` behind this replica refuses with
        ``server_behind``."""
        params: dict[str, str | int] = {"cursor": cursor, "limit": limit}
        if epoch:
            params["epoch"] = epoch
        if mark:
            params["mark"] = mark
        if confirmed is not None:
            params["confirmed"] = confirmed
        response = await self._request("GET", "/sync/pull", params=params)
        try:
            page = PullResponse.model_validate_json(response.content)
        except ValidationError as exc:
            raise ServerBusy(
                "bad_response", "服务器应答无法识别。", "The server's answer was not understood."
            ) from exc
        page.mark = response.headers.get(MARK_HEADER)
        return page

    async def snapshot(self) -> AsyncIterator[bytes]:
        """The snapshot as raw (gzip'd) chunks."""
        try:
            async with self._http.stream(
                "GET", "/sync/snapshot", headers=self._headers()
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    _raise_for(response)
                async for chunk in response.aiter_raw():
                    yield chunk
        except (httpx.TransportError, OSError) as exc:
            raise Offline(
                "offline", "无法连接中心服务器。", "Cannot reach the central server."
            ) from exc

    async def snapshot_image(
        self,
        schema_id: str,
        sink: Callable[[bytes], Awaitable[None]],
        on_size: Callable[[int | None], None] | None = None,
    ) -> SnapshotImageInfo:
        """Download the replica image for replica schema ``schema_id``, handing
        its (gzip'd) bytes to ``sink`` as they come (awaited: the sink writes
        to disk off the event loop), after telling ``on_size`` how many bytes
        will come. Refused with status 409 if the server's schema differs, 404
        from a server without images."""
        try:
            async with self._http.stream(
                "GET",
                "/sync/snapshot/image",
                params={"schema": schema_id},
                headers=self._headers(),
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    _raise_for(response)
                try:
                    info = SnapshotImageInfo.from_headers(response.headers)
                except ValidationError as exc:
                    raise ServerBusy(
                        "bad_response",
                        "服务器应答无法识别。",
                        "The server's answer was not understood.",
                    ) from exc
                if on_size is not None:
                    length = response.headers.get("content-length", "")
                    on_size(int(length) if length.isdigit() else None)
                async for chunk in response.aiter_raw():
                    await sink(chunk)
                return info
        except httpx.TransportError as exc:  # not OSError: the sink's disk errors are no outage
            raise Offline(
                "offline", "无法连接中心服务器。", "Cannot reach the central server."
            ) from exc


def _raise_for(response: httpx.Response) -> None:
    status = response.status_code
    if status < 400:
        return
    detail: dict[str, Any] | None = None
    try:
        body = response.json()
        code, zh, en = body["code"], body["message_zh"], body["message_en"]
        if isinstance(body.get("detail"), dict):
            detail = body["detail"]
    except (ValueError, KeyError, TypeError, AttributeError):
        code, zh, en = (
            f"http_{status}",
            f"服务器返回错误 {status}。",
            f"The server answered {status}.",
        )
    retry = response.headers.get("retry-after", "")
    retry_after = float(retry) if retry.isdigit() else None
    if status == 401:
        raise Unauthorised(code, zh, en, status)
    if status >= 500 or status == 429:
        raise ServerBusy(code, zh, en, status, retry_after=retry_after)
    raise Refused(code, zh, en, status, detail)
