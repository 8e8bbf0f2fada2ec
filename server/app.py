"""The central server's HTTP API (FastAPI).

Every endpoint but /health, enrolment and login needs the workstation's device
token (``X-Device-Token``) and a clerk session (``Authorization: Bearer``).
Malformed, oversized or unauthorised requests get a 4xx with a body that says
why in both languages; a database that is briefly unavailable gets 503 and the
workstation backs off and retries.
"""

import asyncio
import logging
import re
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from domain.leases import NUMBER_BLOCK, Lease
from local_db.image import SCHEMA_ID
from sync.protocol import (
    CONFIRMED_HEADER,
    CURSOR_HEADER,
    DEVICE_HEADER,
    EPOCH_HEADER,
    LEASE_HEADER,
    MARK_HEADER,
    MAX_BODY_BYTES,
    PULL_LIMIT_MAX,
    ClerkInfo,
    EnrollRequest,
    EnrollResponse,
    ErrorBody,
    LeaseGrant,
    LeaseRequest,
    LeasesHeld,
    LeasesKept,
    LoginRequest,
    LoginResponse,
    NumberBlockRequest,
    NumberBlockResponse,
    PullResponse,
    PushRequest,
    PushResponse,
    SnapshotImageInfo,
)

from .auth import AuthError, AuthService, Device, Session, require_data_role
from .checkpoint import WalCheckpointer
from .db import is_sqlite, make_engine, utc_now
from .keys import register_key
from .leases import HighWater, LeaseRefused, grant_lease, reassert_leases
from .migrate import check_schema
from .migrate import migrate as migrate_schema
from .snapshots import SnapshotImages, image_chunks
from .sync_service import EpochChanged, PushMalformed, ReplicaClaim, ServerBehind, SyncService

log = logging.getLogger(__name__)


def _error(
    status: int,
    code: str,
    zh: str,
    en: str,
    detail: Any = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = ErrorBody(code=code, message_zh=zh, message_en=en, detail=detail)
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


_MARK = re.compile(r"^[0-9a-f]{16}$")

# What each error status means, for the OpenAPI document: every route lists
# those it can answer, each with the bilingual body (ErrorBody)
_ERROR_MEANING: dict[int, str] = {
    401: "no workstation token, a workstation unknown or disabled, no clerk session or "
    "one that ended (at login: wrong username or password)",
    403: "the enrolment code is invalid, used or expired",
    409: "a conflict the code names (see the route)",
    413: f"the request body is over {MAX_BODY_BYTES:,} bytes",
    415: "the body is not JSON (Content-Type)",
    422: "the request is malformed (body, query, headers; NUL anywhere)",
    423: "too many failed logins: the clerk is locked out for a while",
    501: "leases of this kind are not granted yet",
    503: "the central database is briefly unavailable (Retry-After); retry",
}
# every route: the body limit, a malformed request, the database
_EVERY_ROUTE = (413, 422, 503)


def _errors(*statuses: int, **meanings: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for ``statuses`` (and those of every route), each
    with the bilingual error body; ``meanings`` (``e409="..."``) say more
    than ``_ERROR_MEANING`` for this route."""
    return {
        status: {
            "model": ErrorBody,
            "description": meanings.get(f"e{status}", _ERROR_MEANING[status]),
        }
        for status in sorted({*statuses, *_EVERY_ROUTE})
    }


_JSON_TYPES = ("application/json", "application/merge-patch+json")


def _not_json(content_type: str | None) -> bool:
    """A Content-Type that says the body is something else than JSON (none
    at all is read as JSON, as workstations of release 0.1 send it)."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media not in _JSON_TYPES and not media.endswith("+json")


class BodyNotJson(Exception):
    """A body whose Content-Type is not JSON: 415."""


def _not_json_response() -> JSONResponse:
    return _error(
        415,
        "request_not_json",
        "请求内容应为 JSON（Content-Type: application/json）。",
        "The request body must be JSON (Content-Type: application/json).",
    )


def _replica_claim(headers: Mapping[str, str]) -> ReplicaClaim | None:
    """Where a pushing workstation's replica stands (its X-Replica-* headers),
    or None if it says nothing (a workstation of release 0.1). Malformed: 422."""
    epoch, cursor = headers.get(EPOCH_HEADER), headers.get(CURSOR_HEADER)
    if epoch is None or cursor is None:
        return None
    mark, confirmed = headers.get(MARK_HEADER), headers.get(CONFIRMED_HEADER)
    lease = headers.get(LEASE_HEADER)
    numbers = [cursor] + ([confirmed] if confirmed is not None else [])
    if (
        len(epoch) > 64
        or not all(n.isascii() and n.isdigit() and len(n) <= 18 for n in numbers)
        or (mark is not None and not _MARK.match(mark))
        or (lease is not None and len(lease) > 40)
    ):
        raise PushMalformed([{"loc": ["header", "X-Replica-*"], "msg": "malformed"}])
    return ReplicaClaim(
        epoch=epoch,
        cursor=int(cursor),
        mark=mark,
        confirmed=int(confirmed) if confirmed is not None else None,
        newest_lease=lease,
    )


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, before they are parsed.

    A declared Content-Length is checked at once; a body without one is read
    (up to the limit) before the app sees it, so the refusal is ours and not a
    parsing error."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.isdigit() or int(declared) > self.limit:
                await self._too_large(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        received = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            received += len(message.get("body", b""))
            if received > self.limit:
                await self._too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        replay = iter(messages)

        async def buffered() -> Message:
            return next(replay, None) or await receive()

        await self.app(scope, buffered, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = _error(
            413,
            "request_too_large",
            "请求内容过大。",
            f"The request body exceeds {self.limit} bytes.",
        )
        await response(scope, receive, send)


class RefuseNul:
    """Refuse a request whose path, query string or headers hold NUL (raw or
    ``%00``) with 422, before anything reads them: PostgreSQL refuses NUL in
    text, and a value that reached it answered 503 (database unavailable,
    retry) or 500. Bodies are checked by their models (``sync.protocol``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (
            b"\x00" in scope.get("query_string", b"")
            or b"%00" in scope.get("query_string", b"")
            or "\x00" in scope.get("path", "")
            or any(b"\x00" in value for _, value in scope.get("headers") or [])
        ):
            response = _error(
                422,
                "request_malformed",
                "请求中含有空字符（NUL）。",
                "The request holds a NUL character.",
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def create_app(
    engine: Engine | str,
    snapshot_dir: Path | None = None,
    *,
    migrate: bool = False,
    docs: bool = False,
) -> FastAPI:
    """The server app over ``engine`` (or a database URL). Replica images are
    kept in ``snapshot_dir`` (default: see ``server.snapshots.default_directory``).
    ``docs``: serve the interactive API pages (/docs, /redoc), which load
    their scripts from a public CDN and invite trying requests against the
    live server; off by default (/openapi.json is always there).

    The database must be at the newest schema revision: else this raises
    ``SchemaNotCurrent``, whose message names the command that migrates it
    (``workstation admin --db URL migrate``). ``migrate=True`` migrates it
    first instead (the demo and the tests; a site migrates as a step of its own,
    after a backup)."""
    url = engine if isinstance(engine, str) else None
    if isinstance(engine, str):
        engine = make_engine(engine)
    try:
        if migrate:
            migrate_schema(engine)
        else:
            check_schema(engine)
    except Exception:
        if url is not None:
            engine.dispose()
        raise
    # SQLite: the log is copied back into the file beside the pushes, not in one
    checkpointer = WalCheckpointer(engine) if is_sqlite(engine) else None
    auth = AuthService(engine)
    sync = SyncService(engine)
    images = SnapshotImages(engine, snapshot_dir)
    # beside the replica images, outside the database: survives its restore.
    # On PostgreSQL only with a --snapshot-dir of the site's (the default is a
    # temporary directory of this process, which would survive nothing)
    lasting = snapshot_dir is not None or is_sqlite(engine)
    high_water = HighWater(images.directory / "number-high-water.json" if lasting else None)

    app = FastAPI(
        title="Hospital window central server",
        version="1",
        description="Central server for the admission, exam registration and cashier workstations.",
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
    )
    app.state.engine = engine
    app.state.auth = auth
    app.state.sync = sync
    app.state.snapshots = images
    app.state.checkpointer = checkpointer
    app.add_middleware(RefuseNul)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)

    @app.exception_handler(AuthError)
    async def _auth_error(_request: Request, exc: AuthError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.zh, exc.en)

    def caller_refused(request: Request) -> AuthError | None:
        """Why the route's credentials refuse this request, or None: checked
        before its body is judged, so that a stranger learns nothing of what a
        body should be (FastAPI parses the body before the route's
        dependencies run)."""
        route = request.scope.get("route")
        dependant = getattr(route, "dependant", None)
        calls = set(_calls(dependant)) if dependant is not None else set()
        token = request.headers.get(DEVICE_HEADER)
        try:
            if session_of in calls:
                auth.device_and_session(token, _bearer(request.headers.get("authorization")))
            elif device_of in calls:
                auth.device(token)
        except AuthError as refused:
            return refused
        return None

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI could not read the body (not UTF-8, ...)
            return await _malformed(
                request, RequestValidationError([{"loc": ["body"], "msg": str(exc.detail)}])
            )
        # outside any route (404, 405)
        words = {
            404: ("没有这个接口。", "No such endpoint."),
            405: ("该接口不接受此请求方法。", "This endpoint does not take this method."),
        }
        zh, en = words.get(exc.status_code, ("请求无法处理。", "The request cannot be handled."))
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "request_error")
        return _error(exc.status_code, code, zh, en, headers=getattr(exc, "headers", None))

    @app.exception_handler(BodyNotJson)
    async def _body_not_json(_request: Request, _exc: BodyNotJson) -> JSONResponse:
        return _not_json_response()

    @app.exception_handler(RequestValidationError)
    async def _malformed(request: Request, exc: RequestValidationError) -> JSONResponse:
        refused = await run_in_threadpool(caller_refused, request)
        if refused is not None:
            return _error(refused.status, refused.code, refused.zh, refused.en)
        if _not_json(request.headers.get("content-type")) and request.method in ("POST", "PUT"):
            return _not_json_response()
        detail = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))}
            for e in exc.errors()[:20]
        ]
        return _error(
            422, "request_malformed", "请求格式错误。", "The request is malformed.", detail
        )

    @app.exception_handler(PushMalformed)
    async def _malformed_push(_request: Request, exc: PushMalformed) -> JSONResponse:
        # the push's credentials were checked before its body (SyncService.push)
        detail = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))}
            for e in exc.errors[:20]
        ]
        return _error(
            422, "request_malformed", "请求格式错误。", "The request is malformed.", detail
        )

    @app.exception_handler(OperationalError)
    @app.exception_handler(DBAPIError)
    # the driver's own, from the statements the push sends it directly (server.raw)
    @app.exception_handler(engine.dialect.loaded_dbapi.Error)
    async def _unavailable(_request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", exc)
        return _error(
            503,
            "database_unavailable",
            "中心数据库暂时不可用，稍后自动重试。",
            "The central database is briefly unavailable; retrying shortly.",
            headers={"Retry-After": "2"},
        )

    def device_of(token: Annotated[str | None, Header(alias=DEVICE_HEADER)] = None) -> Device:
        return auth.device(token)

    def session_of(
        token: Annotated[str | None, Header(alias=DEVICE_HEADER)] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> Session:
        return auth.device_and_session(token, _bearer(authorization))

    def data_session_of(
        request: Request, session: Annotated[Session, Depends(session_of)]
    ) -> Session:
        """A session whose clerk works with patients or money (not only IT's);
        a refusal is audited (``access``, the path asked for)."""
        try:
            return require_data_role(session)
        except AuthError as exc:
            auth.record_for(session, "access", request.url.path, "refused", exc.code)
            raise

    @app.get("/health", responses=_errors())
    def health() -> dict[str, Any]:
        return {"status": "ok", "epoch": sync.epoch(), "server_time": utc_now()}

    @app.post("/devices/enroll", response_model=EnrollResponse, responses=_errors(403, 415))
    def enroll(body: EnrollRequest) -> EnrollResponse:
        device_id, token = auth.enroll(body.code, body.device_name)
        return EnrollResponse(device_id=device_id, device_token=token, epoch=sync.epoch())

    @app.post(
        "/auth/login",
        response_model=LoginResponse,
        # a workstation of release 0.1 refuses fields it does not know: the
        # key's certificate is there only for a login that registered a key
        response_model_exclude_none=True,
        responses=_errors(401, 415, 423),
    )
    def login(body: LoginRequest, device: Annotated[Device, Depends(device_of)]) -> LoginResponse:
        token, expires, session = auth.login(device, body.username, body.password)
        certificate = None
        if body.signing_key is not None:  # the password is checked: the key is this clerk's
            certificate = register_key(
                engine,
                session.clerk_id,
                device.device_id,
                body.signing_key,
                body.unsigned_through,
            )
        return LoginResponse(
            session_token=token,
            expires_at=expires,
            clerk=ClerkInfo(
                clerk_id=session.clerk_id,
                username=session.username,
                name=session.name,
                roles=list(session.roles),
            ),
            policy=session.policy,
            server_time=utc_now(),
            epoch=sync.epoch(),
            key_certificate=certificate,
        )

    @app.post("/auth/logout", status_code=204, responses=_errors(401))
    def logout(
        session: Annotated[Session, Depends(session_of)],
        authorization: Annotated[str | None, Header()] = None,
    ) -> None:
        bearer = _bearer(authorization)
        assert bearer is not None  # session_of checked it
        auth.logout(session, bearer)

    def granted(session: Session, kind: str, resource: str, count: int) -> Lease:
        """A lease, audited in its transaction (a refusal in one of its own)."""
        try:
            return grant_lease(
                engine,
                session.device_id,
                kind,
                resource,
                count,
                session.clerk_id,
                high_water,
                roles=session.roles,
                session=session.ref,
            )
        except LeaseRefused as exc:
            auth.record_for(session, "lease", f"{kind}:{resource}:{count}", "refused", exc.code)
            raise

    def lease_refused(exc: LeaseRefused) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return _error(exc.status, exc.code, exc.zh, exc.en, headers=headers)

    limited: dict[int | str, dict[str, Any]] = {
        403: {"model": ErrorBody, "description": "the clerk's roles use no numbers of the series"},
        429: {
            "model": ErrorBody,
            "description": "too many grants this minute, or numbers today (Retry-After)",
        },
    }

    @app.post(
        "/leases",
        response_model=LeaseGrant,
        responses={
            **_errors(
                401,
                409,
                415,
                501,
                e409="nothing left to lease",
                e422="malformed, or an unknown kind or resource, or too many",
            ),
            **limited,
        },
    )
    def lease(body: LeaseRequest, session: Annotated[Session, Depends(data_session_of)]) -> Any:
        """Lease ``count`` of ``resource`` of ``kind`` (``domain.leases``) to
        the session's workstation. Number blocks: only to a clerk whose roles
        use numbers of the series, within the policy's limits per device."""
        try:
            return LeaseGrant.of(granted(session, body.kind, body.resource, body.count))
        except LeaseRefused as exc:
            return lease_refused(exc)

    @app.post("/leases/held", response_model=LeasesKept, responses={**_errors(401, 415), **limited})
    def leases_held(body: LeasesHeld, session: Annotated[Session, Depends(data_session_of)]) -> Any:
        """The number blocks this workstation holds, told again after a restore
        from a backup: those the server forgot are recorded again (and their
        series' counter moved past them) unless they overlap another's or were
        never handed out. Counted against the device's lease limits."""
        held = [grant.lease() for grant in body.leases]
        try:
            kept, refused_ids = reassert_leases(
                engine,
                session.device_id,
                held,
                high_water,
                clerk_id=session.clerk_id,
                session=session.ref,
            )
        except LeaseRefused as exc:
            auth.record_for(session, "leases_held", f"{len(held)} blocks", "refused", exc.code)
            return lease_refused(exc)
        return LeasesKept(kept=kept, refused=refused_ids)

    @app.post(
        "/leases/numbers",
        response_model=NumberBlockResponse,
        deprecated=True,
        responses={**_errors(401, 409, 415, e409="the number series is exhausted"), **limited},
    )
    def lease_numbers(
        body: NumberBlockRequest, session: Annotated[Session, Depends(data_session_of)]
    ) -> Any:
        """A number block, as workstations of release 0.1 ask for one."""
        try:
            lease = granted(session, NUMBER_BLOCK, body.series, body.count)
        except LeaseRefused as exc:
            return lease_refused(exc)
        assert lease.first is not None and lease.last is not None
        return NumberBlockResponse(
            lease_id=lease.lease_id,
            series=body.series,
            first=lease.first,
            last=lease.last,
            granted_at=lease.granted_at,
        )

    @app.post(
        "/sync/push",
        response_model=PushResponse,
        responses=_errors(
            401,
            409,
            415,
            e409="epoch_changed (the server was restored: load the data again) or "
            "server_behind (the server is behind this workstation's replica)",
        ),
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": _SCHEMAS + "PushRequest"}}},
            }
        },
    )
    async def push(request: Request) -> Response:
        """Apply a workstation's operations (a ``PushRequest``), in ``client_seq`` order.

        The hot path of a site: the device, the session and the body are
        checked, and the ops applied, in one transaction on one server thread
        (``SyncService.push``), not in FastAPI's dependencies and body
        validation, which took more of a one-op push than applying it."""
        body = await request.body()
        headers = request.headers
        device_token, bearer = headers.get(DEVICE_HEADER), _bearer(headers.get("authorization"))

        def replica() -> ReplicaClaim | None:
            """Read once the credentials are checked: a stranger gets 401, not
            a lesson in what a push should be."""
            if _not_json(headers.get("content-type")):
                raise BodyNotJson
            return _replica_claim(headers)  # where the replica stands: nothing applied if ahead

        def answer() -> str:
            # serialised once, here: returned as a model, FastAPI would validate
            # the up-to-500 results again before serialising them
            return sync.push(device_token, bearer, body, replica).model_dump_json()

        loop = asyncio.get_running_loop()
        try:
            text = await loop.run_in_executor(_push_threads(), answer)
        except ServerBehind as behind:
            sync.audit_behind(behind.device_id, None, behind.found)
            return _error(409, behind.code, behind.zh, behind.en, behind.found)
        except EpochChanged as changed:
            return _error(409, changed.code, changed.zh, changed.en, changed.found)
        return Response(text, media_type="application/json")

    @app.get(
        "/sync/pull",
        response_model=PullResponse,
        responses=_errors(
            401, 409, e409="server_behind (the server is behind this workstation's replica)"
        ),
    )
    def pull(
        session: Annotated[Session, Depends(data_session_of)],
        cursor: Annotated[int, Query(ge=0, le=2**62)] = 0,
        limit: Annotated[int, Query(ge=1, le=PULL_LIMIT_MAX)] = 1000,
        mark: Annotated[str | None, Query(pattern="^[0-9a-f]{16}$")] = None,
        confirmed: Annotated[int | None, Query(ge=0, le=2**62)] = None,
        epoch: Annotated[str | None, Query(max_length=64)] = None,
    ) -> Response:
        try:
            page = sync.pull(
                session.device_id, cursor, limit, mark=mark, confirmed=confirmed, epoch=epoch
            )
        except ServerBehind as behind:
            sync.audit_behind(session.device_id, session.clerk_id, behind.found, session.ref)
            return _error(409, behind.code, behind.zh, behind.en, behind.found)
        if page.changes:  # what was handed out, and to whom; an empty pull hands out
            # nothing, and recording each (every few seconds a window) would be
            # a write a poll, 1.4 million records a day at 50 windows
            auth.record_for(
                session,
                "pull",
                f"{cursor}-{page.next_cursor}",
                "ok",
                f"{len(page.changes)} changes",
            )
        # the mark of the entry at the new cursor goes in a header: a workstation
        # of release 0.1 refuses fields it does not know in the body
        headers = {MARK_HEADER: page.mark} if page.mark else None
        return Response(page.model_dump_json(), media_type="application/json", headers=headers)

    @app.get(
        "/sync/snapshot",
        response_class=StreamingResponse,
        responses={200: {"content": {"application/x-ndjson+gzip": {}}}, **_errors(401)},
    )
    def snapshot(session: Annotated[Session, Depends(data_session_of)]) -> StreamingResponse:
        auth.record_for(session, "snapshot", "", "ok")
        return StreamingResponse(
            sync.snapshot(session.device_id), media_type="application/x-ndjson+gzip"
        )

    @app.get(
        "/sync/snapshot/image",
        response_class=StreamingResponse,
        responses={
            200: {"content": {"application/gzip": {}}},
            **_errors(
                401,
                409,
                e409="the workstation's schema differs",
                e503="the image is being built, or the database is briefly unavailable; retry",
            ),
        },
    )
    def snapshot_image(
        session: Annotated[Session, Depends(data_session_of)],
        schema: Annotated[str, Query(min_length=1, max_length=64)],
    ) -> Any:
        """A complete replica file (gzip'd) for a workstation of replica schema
        ``schema``; cursor, epoch, SHA-256 and the device's last seq come in the
        ``X-Image-*`` headers. The row snapshot (/sync/snapshot) is the fallback."""
        if schema != SCHEMA_ID:
            auth.record_for(session, "snapshot_image", schema, "refused")
            return _error(
                409,
                "snapshot_schema_mismatch",
                "本工作站的数据格式与服务器不同，改用逐行下载。",
                "This workstation's replica schema differs from the server's; "
                "use the row snapshot.",
                detail={"server_schema": SCHEMA_ID},
            )
        found = images.open_current()
        if found is None:
            return _error(
                503,
                "snapshot_preparing",
                "中心服务器正在准备患者数据，稍后自动重试。",
                "The server is preparing the patient data; retrying shortly.",
                headers={"Retry-After": "10"},
            )
        image, file = found
        try:
            with engine.connect() as conn:
                device_last_seq = sync.device_last_seq(conn, session.device_id, image.cursor)
            auth.record_for(session, "snapshot_image", f"{image.epoch}:{image.cursor}", "ok")
        except Exception:
            file.close()
            raise
        info = SnapshotImageInfo(
            cursor=image.cursor,
            epoch=image.epoch,
            sha256=image.sha256,
            device_last_seq=device_last_seq,
            rows=image.rows,
        )
        return StreamingResponse(
            image_chunks(file),
            media_type="application/gzip",
            headers={**info.headers(), "Content-Length": str(image.size)},
        )

    document = app.openapi

    def openapi() -> dict[str, Any]:
        # the push's body is parsed by the handler, not by FastAPI: its schema
        # is added to the document here
        if app.openapi_schema is None:
            schema = document()
            pushed = PushRequest.model_json_schema(ref_template=_SCHEMAS + "{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in pushed.pop("$defs", {}).items():
                components.setdefault(name, definition)
            components["PushRequest"] = pushed
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


_SCHEMAS = "#/components/schemas/"
PUSH_THREADS = 16


@cache
def _push_threads() -> ThreadPoolExecutor:
    """The threads pushes are applied in, one pool a process. Handing a push
    to one of these costs a third of anyio's hand-off (18-26 us against
    59-79 us measured here; anyio's queue wakes its thread through a Python
    Condition), and a one-op push is mostly hand-offs and HTTP."""
    return ThreadPoolExecutor(max_workers=PUSH_THREADS, thread_name_prefix="push")


def _calls(dependant: Any) -> Iterator[Any]:
    """The callables a route depends on, and those they depend on."""
    for dependency in dependant.dependencies:
        yield dependency.call
        yield from _calls(dependency)


def _bearer(authorization: str | None) -> str | None:
    return authorization.removeprefix("Bearer ").strip() if authorization else None
