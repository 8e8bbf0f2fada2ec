"""``workstation run --headless``: the workstation without its window.

The same builder, desk and sync engine as the Textual app, driven by JSON
lines instead of keys, so that a site can script its window and the tests
can kill a real workstation process. Each line on stdin is one command of
the desk's (``{"id": 1, "cmd": "top_up", "card_no": "...", "amount":
"12.50"}``); each answer is one line on stdout echoing the ``id``, with
``"ok": true`` and the result, or ``"ok": false``, a ``code`` and the
message in both languages. A refusal (by the rules, of a login, of a line
that is not a command) is an answer, never the end of the process.

Commands are handled one at a time, in the order they arrive, as one clerk
works: an answer reporting a committed action is written after the desk's
commit returned, that is once the operation is in the replica with its
outbox entry; whatever happens to the process afterwards, the sync engine
sends it. Lines with ``"event"`` instead of ``"id"`` are unsolicited:
``ready`` once, ``status`` when the sync status changes, ``stopped`` last.

The protocol is stdout's alone: logs go to the data directory's log file.
End of input, ``quit``, SIGTERM, SIGINT and SIGHUP all end the process in
order (the engine stopped, the replica closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import threading
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, TextIO

from domain.commands import Fact
from domain.errors import DomainError, Rejection
from local_db.store import PatientView

from .builder import Workstation
from .desk import (
    CASH,
    RESIDENT_ID,
    CashierDesk,
    CommandRejected,
    Desk,
    Done,
    LoginFailed,
    NotAllowed,
)

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
MAX_LINE_BYTES = 1 << 20  # a longer line is refused (and skipped), not buffered without end
SYNC_TIMEOUT_S = 30.0  # ``sync`` waits this long unless told otherwise
SYNC_TIMEOUT_MAX_S = 3600.0
SEARCH_LIMIT_MAX = 100
ENGINE_STOP_S = 5.0  # the engine finishes its cycle within this, or is cancelled

# The protocol's own refusals: code -> (简体中文, English). The rules' refusals
# keep their own codes and messages (domain/errors.py).
MESSAGES: dict[str, tuple[str, str]] = {
    "malformed_json": (
        "这一行不是 JSON 对象：{detail}",
        "This line is not a JSON object: {detail}",
    ),
    "line_too_long": (
        "这一行超过 {limit} 字节，已丢弃。",
        "This line is longer than {limit} bytes and was discarded.",
    ),
    "unknown_command": (
        "不认识的命令“{cmd}”。可用的命令：{commands}。",
        "Unknown command “{cmd}”. The commands are: {commands}.",
    ),
    "field_missing": ("缺少字段“{field}”。", "The field “{field}” is missing."),
    "field_unknown": (
        "命令 {cmd} 没有字段“{field}”。",
        "The command {cmd} has no field “{field}”.",
    ),
    "field_type": ("字段“{field}”应为{type_zh}。", "The field “{field}” must be {type_en}."),
    "field_range": (
        "字段“{field}”应在 {least} 到 {most} 之间。",
        "The field “{field}” must be between {least} and {most}.",
    ),
    "patient_key": (
        "请给出 patient_id、card_no、doc_no 三者之一。",
        "Give exactly one of patient_id, card_no or doc_no.",
    ),
    "login_required": ("请先登录。", "Log in first."),
    "already_logged_in": (
        "操作员 {username} 已登录，请先注销。",
        "Clerk {username} is logged in; log out first.",
    ),
    "issue_unknown": ("没有编号为 {issue_id} 的未处理同步问题。", "No open Sync issue {issue_id}."),
    "sync_timeout": (
        "{timeout} 秒内未同步完：还有 {pending} 项操作等待中心服务器确认。",
        "Not synced within {timeout} s: {pending} operations still wait for the server.",
    ),
    "stopping": ("工作站正在退出。", "The workstation is stopping."),
    "internal": (
        "意外错误：{error}。已经提交的操作仍然有效：重试之前请先查看该患者。",
        "Unexpected error: {error}. What was committed stays committed: look the patient "
        "up before trying again.",
    ),
}

# a ``status`` event is sent when one of these changes
_EVENT_FIELDS = (
    "online",
    "has_session",
    "open_issues",
    "error_code",
    "busy",
    "replica_ready",
    "clock_skew_flagged",
    "clerk",
)

# a field's expected JSON type, named in both languages
_TYPES: dict[str, tuple[str, str]] = {
    "text": ('文本（JSON 字符串，金额如 "12.50"）', 'text (a JSON string; money as "12.50")'),
    "integer": ("整数", "an integer"),
    "number": ("数字", "a number"),
    "flag": ("true 或 false", "true or false"),
}


class ProtocolError(Exception):
    """A line the protocol refuses: its code is in :data:`MESSAGES`."""

    def __init__(self, code: str, **params: Any) -> None:
        super().__init__(code)
        self.code = code
        self.params = params

    def message(self, lang: str) -> str:
        zh, en = MESSAGES[self.code]
        return (en if lang == "en" else zh).format(**self.params)


@dataclass(frozen=True)
class Overlong:
    """In place of a line longer than :data:`MAX_LINE_BYTES`."""


Line = str | bytes | Overlong  # what the reader hands over; None in the queue is the end of input


class Request:
    """One command line, read field by field; a field of the wrong type or
    missing is a ProtocolError naming it."""

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def text(self, name: str, default: str | None = None) -> str:
        value = self.fields.get(name, default)
        if value is None:
            raise ProtocolError("field_missing", field=name)
        if not isinstance(value, str):
            raise _wrong_type(name, "text")
        return value

    def integer(
        self, name: str, default: int | None = None, *, least: int = 0, most: int = 2**53
    ) -> int:
        value = self.fields.get(name, default)
        if value is None:
            raise ProtocolError("field_missing", field=name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise _wrong_type(name, "integer")
        if not least <= value <= most:
            raise ProtocolError("field_range", field=name, least=least, most=most)
        return value

    def flag(self, name: str) -> bool:
        value = self.fields.get(name, False)
        if not isinstance(value, bool):
            raise _wrong_type(name, "flag")
        return value

    def seconds(self, name: str, default: float, most: float) -> float:
        value = self.fields.get(name, default)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise _wrong_type(name, "number")
        if not 0 < value <= most:
            raise ProtocolError("field_range", field=name, least=0, most=most)
        return float(value)


def _wrong_type(name: str, kind: str) -> ProtocolError:
    zh, en = _TYPES[kind]
    return ProtocolError("field_type", field=name, type_zh=zh, type_en=en)


Handler = Callable[[Request], Awaitable[dict[str, Any]]]

# Each command and its fields (besides "id" and "cmd"); any other field is
# refused, so a misspelt one is not silently left out.
COMMANDS: dict[str, frozenset[str]] = {
    "login": frozenset({"username", "password"}),
    "logout": frozenset(),
    "register": frozenset({"name", "sex", "birth_date", "doc_type", "doc_no", "phone", "address"}),
    "issue_card": frozenset({"patient_id", "amount", "method"}),
    "top_up": frozenset({"card_no", "amount", "method"}),
    "cancel_card": frozenset({"card_no", "reason"}),
    "search": frozenset({"query", "limit"}),
    "patient": frozenset({"patient_id", "card_no", "doc_no"}),
    "status": frozenset(),
    "issues": frozenset({"all"}),
    "resolve_issue": frozenset({"issue_id", "note"}),
    "sync": frozenset({"timeout"}),
    "quit": frozenset(),
}
# what may be asked with nobody logged in (patients' data is behind the login,
# as at the window)
WITHOUT_CLERK = frozenset({"login", "logout", "status", "quit"})


class HeadlessWindow:
    """A cashier window whose clerk types JSON: each line becomes a call on
    the desk (drafts, then the one commit path), each answer a line through
    ``write``. Make it inside the running event loop."""

    def __init__(self, desk: Desk, cashier: CashierDesk, write: Callable[[str], None]) -> None:
        self.desk = desk
        self.cashier = cashier
        self._write = write
        self._loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()  # quit, end of input, a signal, or stdout gone
        self._changed = asyncio.Event()  # the desk's status may have moved (``sync`` waits on it)
        self._closed = False
        self._shown: tuple[Any, ...] | None = None  # the status last sent as an event
        self.handlers: dict[str, Handler] = {
            "login": self._login,
            "logout": self._logout,
            "register": self._register,
            "issue_card": self._issue_card,
            "top_up": self._top_up,
            "cancel_card": self._cancel_card,
            "search": self._search,
            "patient": self._patient,
            "status": self._status,
            "issues": self._issues,
            "resolve_issue": self._resolve_issue,
            "sync": self._sync,
            "quit": self._quit,
        }
        desk.subscribe(self._desk_changed)

    # -- lines in, lines out ----------------------------------------------------

    def emit(self, message: dict[str, Any]) -> None:
        """Write one line and flush it. If nobody reads any more, stop."""
        if self._closed:
            return
        try:
            self._write(json.dumps(message, ensure_ascii=False, separators=(",", ":")))
        except OSError as exc:  # stdout closed (BrokenPipeError): no one to answer
            log.warning("the protocol's output is gone (%s): stopping", exc)
            self._closed = True
            self.stop()

    def stop(self) -> None:
        """Stop after the command in hand (safe from a signal handler)."""
        self.stopping.set()
        self._changed.set()

    async def serve(self, lines: asyncio.Queue[Line | None]) -> None:
        """Answer lines until ``quit``, the end of input (None) or :meth:`stop`."""
        self.emit(
            {
                "event": "ready",
                "protocol": PROTOCOL_VERSION,
                "window": self.desk.settings.window_name,
                "commands": sorted(COMMANDS),
            }
        )
        self._desk_changed()
        while not self.stopping.is_set():
            line = await self._next(lines)
            if line is None:
                break
            answer = await self.answer(line)
            if answer is not None:
                self.emit(answer)

    def close(self) -> None:
        """No more lines from here on; the last says the workstation stopped."""
        self.emit({"event": "stopped"})
        self._closed = True

    async def _next(self, lines: asyncio.Queue[Line | None]) -> Line | None:
        """The next line, or None at the end of input or when told to stop."""
        if not lines.empty():
            return lines.get_nowait()
        getting = asyncio.ensure_future(lines.get())
        stopping = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({getting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if self.stopping.is_set():  # told to stop: no new command, even one just read
            getting.cancel()
            return None
        return getting.result()

    async def answer(self, line: Line) -> dict[str, Any] | None:
        """The answer to one line (None for a blank one)."""
        request_id: Any = None
        command: Any = None
        try:
            request = _parse(line)
            if request is None:
                return None
            request_id, command = request.fields.get("id"), request.fields.get("cmd")
            result = await self._dispatch(request)
        except ProtocolError as exc:
            return _refusal(
                request_id, exc.code, exc.message("zh"), exc.message("en"), **_extra(exc)
            )
        except LoginFailed as exc:
            return _refusal(request_id, exc.code, exc.zh, exc.en)
        except (CommandRejected, NotAllowed, DomainError) as exc:
            return _rejected(request_id, exc.rejection)
        except Exception as exc:
            # the command's name only: a line may hold a password
            log.exception("headless command %r (id %r) failed", command, request_id)
            error = ProtocolError("internal", error=f"{type(exc).__name__}: {exc}")
            return _refusal(request_id, error.code, error.message("zh"), error.message("en"))
        return {"id": request_id, "ok": True, **result}

    async def _dispatch(self, request: Request) -> dict[str, Any]:
        name = request.fields.get("cmd")
        if not isinstance(name, str):
            if name is None:
                raise ProtocolError("field_missing", field="cmd")
            raise _wrong_type("cmd", "text")
        fields = COMMANDS.get(name)
        if fields is None:
            raise ProtocolError(
                "unknown_command", cmd=name[:40], commands=", ".join(sorted(COMMANDS))
            )
        for field_name in request.fields:
            if field_name not in fields and field_name not in ("id", "cmd"):
                raise ProtocolError("field_unknown", cmd=name, field=field_name[:40])
        if name not in WITHOUT_CLERK and self.desk.clerk is None:
            raise ProtocolError("login_required")
        return await self.handlers[name](request)

    # -- status -------------------------------------------------------------------

    def _desk_changed(self) -> None:
        """From any thread: the desk's status may have changed."""
        if self._closed:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody to tell
            self._loop.call_soon_threadsafe(self._status_event)

    def _status_event(self) -> None:
        self._changed.set()
        status = self.status_fields()
        # the engine's state and the clerk's, not every commit's pending count
        shown = tuple(status[k] for k in _EVENT_FIELDS)
        if shown != self._shown:
            self._shown = shown
            self.emit({"event": "status", **status})

    def status_fields(self) -> dict[str, Any]:
        """The status bar's figures, and the engine's failures and error."""
        status = self.desk.status()
        engine = self.desk.engine.status
        clerk = self.desk.clerk
        return {
            "online": status.online,
            "has_session": status.has_session,
            "pending": status.pending,
            "oldest_pending_at": status.oldest_pending_at,
            "last_sync_at": _iso(status.last_sync_at),
            "open_issues": status.open_issues,
            "failures": engine.failures,
            "error_code": engine.error_code,
            "error_zh": status.error_zh,
            "error_en": status.error_en,
            "busy": status.busy,
            "replica_ready": status.replica_ready,
            "clock_skew_flagged": status.clock_skew_flagged,
            "clerk": clerk.username if clerk else None,
        }

    # -- the commands ----------------------------------------------------------------

    async def _login(self, request: Request) -> dict[str, Any]:
        username, password = request.text("username"), request.text("password")
        if self.desk.clerk is not None:
            raise ProtocolError("already_logged_in", username=self.desk.clerk.username)
        clerk = await self.desk.login(username, password)
        return {
            "clerk": {"username": clerk.username, "name": clerk.name, "roles": sorted(clerk.roles)},
            "mode": clerk.mode,
        }

    async def _logout(self, _request: Request) -> dict[str, Any]:
        if self.desk.clerk is not None:
            await self.desk.logout()
        return {}

    async def _register(self, request: Request) -> dict[str, Any]:
        draft = self.cashier.registration(
            name=request.text("name", ""),
            sex=request.text("sex", ""),
            birth_date=request.text("birth_date", ""),
            doc_type=request.text("doc_type", RESIDENT_ID),
            doc_no=request.text("doc_no", ""),
            phone=request.text("phone", ""),
            address=request.text("address", ""),
        )
        done = await self.cashier.commit(draft)
        return {**_done(done), "mapped": done.mapped}

    async def _issue_card(self, request: Request) -> dict[str, Any]:
        patient_id = request.text("patient_id")
        amount, method = request.text("amount", ""), request.text("method", CASH)
        view = await asyncio.to_thread(self.desk.patient, patient_id)
        if view is None:
            raise DomainError("patient_unknown")
        draft = self.cashier.issue_card_draft(view, amount, method)
        done = await self.cashier.commit(draft)
        return {**_done(done), "amount_fen": draft.prepay_fen}

    async def _top_up(self, request: Request) -> dict[str, Any]:
        card_no = request.text("card_no")
        amount, method = request.text("amount"), request.text("method", CASH)
        view = await asyncio.to_thread(self.desk.patient_by_card, card_no)
        draft = self.cashier.top_up_draft(view, card_no, amount, method)
        done = await self.cashier.commit(draft)
        return {**_done(done), "card_no": draft.card_no, "amount_fen": draft.amount_fen}

    async def _cancel_card(self, request: Request) -> dict[str, Any]:
        draft = self.cashier.cancel_card_draft(request.text("card_no"), request.text("reason", ""))
        done = await self.cashier.commit(draft)
        return {**_done(done), "card_no": draft.card_no}

    async def _search(self, request: Request) -> dict[str, Any]:
        query = request.text("query")
        limit = request.integer("limit", 20, least=1, most=SEARCH_LIMIT_MAX)
        hits = await asyncio.to_thread(self.desk.search, query, limit)
        # until the replica holds the server's data, finding nobody proves nothing
        return {"patients": [asdict(h) for h in hits], "replica_ready": self.desk.replica_ready()}

    async def _patient(self, request: Request) -> dict[str, Any]:
        """One patient, by exactly one of patient_id, card_no (as swiped) or doc_no
        (a resident ID number)."""
        given = [k for k in ("patient_id", "card_no", "doc_no") if k in request.fields]
        if len(given) != 1:
            raise ProtocolError("patient_key")
        key = given[0]
        value = request.text(key)
        lookup: Callable[[str], PatientView | None] = {
            "patient_id": self.desk.patient,
            "card_no": self.desk.patient_by_card,
            "doc_no": self.desk.patient_by_national_id,
        }[key]
        view = await asyncio.to_thread(lookup, value)
        if view is None:
            raise DomainError("patient_unknown")
        return _patient(view)

    async def _status(self, _request: Request) -> dict[str, Any]:
        return self.status_fields()

    async def _issues(self, request: Request) -> dict[str, Any]:
        everything = request.flag("all")
        issues = await asyncio.to_thread(self.desk.issues, None if everything else "open")
        return {"issues": [_issue(i) for i in issues]}

    async def _resolve_issue(self, request: Request) -> dict[str, Any]:
        issue_id = request.integer("issue_id", least=1)
        note = request.text("note", "")
        if not await asyncio.to_thread(self.desk.resolve_issue, issue_id, note):
            raise ProtocolError("issue_unknown", issue_id=issue_id)
        return {"issue_id": issue_id, "resolved": True}

    async def _sync(self, request: Request) -> dict[str, Any]:
        """Wait until a sync cycle begun after this command has succeeded with
        nothing left in the outbox (every operation answered by the server),
        or the timeout."""
        timeout = request.seconds("timeout", SYNC_TIMEOUT_S, SYNC_TIMEOUT_MAX_S)
        deadline = self._loop.time() + timeout
        await self.desk.current_shift()  # what the login opens belongs to this sync
        asked = datetime.now().astimezone()
        self.desk.engine.poke()
        while True:
            synced = self.desk.engine.status.last_success_at
            pending = self.desk.store.outbox_stats().pending
            if synced is not None and synced >= asked and pending == 0:
                return self.status_fields()
            if self.stopping.is_set():
                raise ProtocolError("stopping")
            left = deadline - self._loop.time()
            if left <= 0:
                raise ProtocolError("sync_timeout", timeout=f"{timeout:g}", pending=pending)
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.5))

    async def _quit(self, _request: Request) -> dict[str, Any]:
        self.stop()
        return {}


# -- answers -------------------------------------------------------------------------


def _parse(line: Line) -> Request | None:
    if isinstance(line, Overlong):
        raise ProtocolError("line_too_long", limit=MAX_LINE_BYTES)
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("malformed_json", detail="not UTF-8") from None
    if not line.strip():
        return None
    try:
        fields = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ProtocolError("malformed_json", detail=str(exc)) from None
    if not isinstance(fields, dict):
        raise ProtocolError("malformed_json", detail=f"a JSON {type(fields).__name__}")
    return Request(fields)


def _refusal(request_id: Any, code: str, zh: str, en: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": request_id,
        "ok": False,
        "code": code,
        "message_zh": zh,
        "message_en": en,
        **extra,
    }


def _rejected(request_id: Any, rejection: Rejection) -> dict[str, Any]:
    return _refusal(request_id, rejection.code, rejection.message_zh, rejection.message_en)


def _extra(exc: ProtocolError) -> dict[str, Any]:
    """What a script may want beside the message (how much is still pending)."""
    return {"pending": exc.params["pending"]} if exc.code == "sync_timeout" else {}


def _done(done: Done) -> dict[str, Any]:
    """A committed action. ``state``: ``confirmed`` (the server applied it),
    ``provisional`` (committed here; the server has not answered yet) or
    ``refused`` (the server refused it at once: it is in Sync issues)."""
    refused = done.rejection
    state = "refused" if refused else "confirmed" if done.confirmed else "provisional"
    answer: dict[str, Any] = {
        "kind": done.kind,
        "op_id": done.op_id,
        "patient_id": done.patient_id,
        "card_no": done.card_no,
        "receipt_no": done.receipt.receipt_no if done.receipt else None,
        "confirmed": done.confirmed,
        "state": state,
    }
    if done.receipt is not None:
        answer["balance_fen"] = done.receipt.balance_after_fen
        answer["receipt_path"] = str(done.receipt_path) if done.receipt_path else None
    if refused is not None:
        answer["refusal"] = {
            "code": refused.code,
            "message_zh": refused.message_zh,
            "message_en": refused.message_en,
        }
    return answer


def _patient(view: PatientView) -> dict[str, Any]:
    return {
        "patient": view.patient.model_dump(),
        "pending": view.pending,
        "balance_fen": view.balance_fen,
        "confirmed_balance_fen": view.confirmed_balance_fen,
        "cards": [asdict(c) for c in view.cards],
        "transfers": [asdict(t) for t in view.transfers],
    }


def _issue(issue: dict[str, Any]) -> dict[str, Any]:
    rejection = Rejection(code=issue["code"], params=issue["params"])
    summary = issue["summary"]
    return {
        "issue_id": issue["issue_id"],
        "op_id": issue["op_id"],
        "kind": issue["kind"],
        "status": issue["status"],
        "code": issue["code"],
        "message_zh": rejection.message_zh,
        "message_en": rejection.message_en,
        "command": summary.get("kind"),
        "at": summary.get("at"),
        "facts": [_fact(f) for f in issue.get("facts", [])],
        "created_at": issue["created_at"],
        "resolution": issue["resolution"],
    }


def _fact(fact: Fact) -> dict[str, str]:
    value = (fact.value, fact.value) if isinstance(fact.value, str) else fact.value
    return {
        "label_zh": fact.label[0],
        "label_en": fact.label[1],
        "value_zh": value[0],
        "value_en": value[1],
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment else None


# -- running it ----------------------------------------------------------------------


async def run_session(
    station: Workstation, window: HeadlessWindow, lines: asyncio.Queue[Line | None]
) -> None:
    """The sync engine in the background and the window in front, until the
    window stops; then the engine is stopped and the replica closed."""
    engine = asyncio.create_task(station.engine.run(), name="sync")
    engine.add_done_callback(_engine_ended)
    log.info("headless window %r: serving the protocol", station.desk.settings.window_name)
    try:
        await window.serve(lines)
    finally:
        window.stop()
        station.engine.stop()
        _, running = await asyncio.wait({engine}, timeout=ENGINE_STOP_S)
        if running:
            log.warning("the sync engine did not stop within %s s: cancelled", ENGINE_STOP_S)
            engine.cancel()
            await asyncio.wait({engine})
        await station.aclose()
        window.close()
        log.info("headless window stopped")


def _engine_ended(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the sync engine stopped", exc_info=task.exception())


def read_lines(fd: int, lines: asyncio.Queue[Line | None]) -> threading.Thread:
    """Read ``fd`` in a thread of its own (a pipe, a terminal or a file alike),
    handing each line to ``lines`` on the running loop; None at the end."""
    loop = asyncio.get_running_loop()

    def put(item: Line | None) -> bool:
        try:
            loop.call_soon_threadsafe(lines.put_nowait, item)
        except RuntimeError:  # the loop has closed: the session is over
            return False
        return True

    def run() -> None:
        buffer, skipping = b"", False
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                if buffer and not skipping:
                    put(buffer)  # a last line without its newline
                put(None)
                return
            buffer += chunk
            while (end := buffer.find(b"\n")) >= 0:
                line, buffer = buffer[:end], buffer[end + 1 :]
                if skipping:  # the rest of a line already refused
                    skipping = False
                elif not put(line if len(line) <= MAX_LINE_BYTES else Overlong()):
                    return
            if len(buffer) > MAX_LINE_BYTES:
                if not skipping and not put(Overlong()):
                    return
                buffer, skipping = b"", True

    # a daemon: blocked in read() when the session ends, it must not keep the process
    thread = threading.Thread(target=run, name="headless-stdin", daemon=True)
    thread.start()
    return thread


def run_headless(station: Workstation, *, input_fd: int = 0, output: TextIO) -> None:
    """Serve the protocol on ``input_fd`` and ``output`` until the end of input,
    ``quit`` or a signal to stop."""

    def write(line: str) -> None:
        output.write(line + "\n")
        output.flush()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        window = HeadlessWindow(station.desk, station.cashier, write)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, window.stop)
        lines: asyncio.Queue[Line | None] = asyncio.Queue()
        read_lines(input_fd, lines)
        await run_session(station, window, lines)

    asyncio.run(main())
