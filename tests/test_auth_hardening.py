"""Identity and access of the central server, as a security review tested it:
the lockout under parallel guesses (SQLite and PostgreSQL), lockout by clerk
and workstation, answers that do not tell who exists, revocation with
immediate effect (``workstation admin ...``), what the IT administrator may
not do, and which passwords are refused."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from server import auth as server_auth
from server.app import create_app
from server.db import audit, make_engine
from sync.client import SyncError
from sync.engine import NotLoggedIn
from sync.protocol import DEVICE_HEADER
from tests.harness import PASSWORD as HARNESS_PASSWORD
from tests.harness import Central, cashier_station
from workstation.cli import main
from workstation.desk import LoginFailed

PASSWORD = "secret-123"
# argon2 at production cost takes ~0.25 s; a check here takes this long, so
# that parallel guesses overlap as they do against the real hasher
CHECK_S = 0.1


class CountingHasher(PasswordHasher):
    """A cheap argon2 hasher that counts its verifications (the real
    password checks) and takes ``CHECK_S`` over each."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=1024, parallelism=1)
        self.checks = 0
        self._lock = threading.Lock()

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:  # noqa: A002
        with self._lock:
            self.checks += 1
        time.sleep(CHECK_S)
        return super().verify(hash, password)


@dataclass
class Api:
    http: TestClient
    engine: Engine
    hasher: CountingHasher
    url: str

    @property
    def auth(self) -> Any:
        return self.http.app.state.auth  # type: ignore[attr-defined]

    def enroll(self, name: str) -> str:
        code = self.auth.create_enrollment_code(name)
        answer = self.http.post("/devices/enroll", json={"code": code, "device_name": name})
        assert answer.status_code == 200, answer.text
        return str(answer.json()["device_token"])

    def login(self, device_token: str, username: str, password: str = PASSWORD) -> Any:
        return self.http.post(
            "/auth/login",
            json={"username": username, "password": password},
            headers={DEVICE_HEADER: device_token},
        )

    def parallel_logins(
        self, device_token: str, username: str, password: str, count: int
    ) -> list[int]:
        """``count`` logins at once, each on a thread of its own."""
        start = threading.Barrier(count)

        def one(_: int) -> int:
            start.wait()
            return int(self.login(device_token, username, password).status_code)

        with ThreadPoolExecutor(max_workers=count) as pool:
            return list(pool.map(one, range(count)))

    def session(self, device_token: str, username: str) -> dict[str, str]:
        """The headers of a request of ``username`` logged in at ``device_token``."""
        answer = self.login(device_token, username)
        assert answer.status_code == 200, answer.text
        return {
            DEVICE_HEADER: device_token,
            "Authorization": f"Bearer {answer.json()['session_token']}",
        }

    def pull(self, headers: dict[str, str]) -> Any:
        return self.http.get("/sync/pull", headers=headers)

    def admin(self, *command: str) -> None:
        """``workstation admin --db URL ...``, as an administrator types it."""
        main(["admin", "--db", self.url, *command])

    def audited(self, action: str) -> list[tuple[str, str, str | None]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(audit.c.target, audit.c.outcome, audit.c.detail)
                .where(audit.c.action == action)
                .order_by(audit.c.audit_id)
            ).all()
        return [(r.target, r.outcome, r.detail) for r in rows]


@pytest.fixture
def api(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    hasher = CountingHasher()
    monkeypatch.setattr(server_auth, "_hasher", hasher)
    engine = make_engine(db_url)
    app = create_app(engine, migrate=True)
    with TestClient(app) as http:
        yield Api(http, engine, hasher, db_url)
    engine.dispose()


# -- item 2: the lockout holds under parallel guesses ---------------------------


def test_parallel_wrong_guesses_are_all_counted(api: Api) -> None:
    """4 wrong guesses at once, policy 5: each is counted, so one more locks."""
    api.auth.create_clerk("cash", "cash", ["cashier"], PASSWORD)
    device = api.enroll("w1")
    statuses = api.parallel_logins(device, "cash", "wrong-password", 4)
    assert statuses == [401] * 4
    assert api.login(device, "cash", "wrong-password").status_code == 423
    assert api.login(device, "cash").status_code == 423


def test_parallel_guesses_get_no_more_password_checks_than_the_policy_allows(api: Api) -> None:
    api.auth.create_clerk("cash", "cash", ["cashier"], PASSWORD)
    device = api.enroll("w1")
    api.hasher.checks = 0
    statuses = api.parallel_logins(device, "cash", "wrong-password", 20)
    assert api.hasher.checks <= 5, f"{api.hasher.checks} password checks before the lockout"
    assert sorted(set(statuses)) == [401, 423]
    assert statuses.count(401) <= 5
    # locked: even the right password is refused, without a check
    checks = api.hasher.checks
    assert api.login(device, "cash").status_code == 423
    assert api.hasher.checks == checks


# -- item 4: lockout by clerk and workstation; unknown usernames answered alike --


def test_wrong_guesses_at_one_workstation_do_not_lock_the_clerk_out_at_another(
    api: Api,
) -> None:
    api.auth.create_clerk("cash", "cash", ["cashier"], PASSWORD)
    a, b = api.enroll("a"), api.enroll("b")
    for _ in range(5):
        api.login(a, "cash", "wrong-password")
    assert api.login(a, "cash").status_code == 423
    assert api.login(b, "cash").status_code == 200
    # and b's own count starts from nothing
    for _ in range(4):
        assert api.login(b, "cash", "wrong-password").status_code == 401
    assert api.login(b, "cash").status_code == 200


def test_the_lockout_ends_the_clerk_s_session_at_that_workstation(api: Api) -> None:
    """Today a locked-out clerk's session kept working."""
    api.auth.create_clerk("cash", "cash", ["cashier"], PASSWORD)
    a, b = api.enroll("a"), api.enroll("b")
    on_a = api.login(a, "cash").json()["session_token"]
    on_b = api.login(b, "cash").json()["session_token"]
    for _ in range(5):
        api.login(a, "cash", "wrong-password")
    pulled_a = api.http.get(
        "/sync/pull", headers={DEVICE_HEADER: a, "Authorization": f"Bearer {on_a}"}
    )
    assert pulled_a.status_code == 401 and pulled_a.json()["code"] == "session_ended"
    pulled_b = api.http.get(
        "/sync/pull", headers={DEVICE_HEADER: b, "Authorization": f"Bearer {on_b}"}
    )
    assert pulled_b.status_code == 200


def test_unknown_usernames_and_wrong_passwords_are_answered_alike(api: Api) -> None:
    api.auth.create_clerk("cash", "cash", ["cashier"], PASSWORD)
    device = api.enroll("w1")
    bodies: dict[str, set[tuple[int, str]]] = {"cash": set(), "nobody": set()}
    checks: dict[str, list[int]] = {"cash": [], "nobody": []}
    took: dict[str, list[float]] = {"cash": [], "nobody": []}
    for _ in range(2):  # alternately, the fastest of two each: a busy machine varies
        for username in ("cash", "nobody"):
            api.hasher.checks = 0
            started = time.perf_counter()
            answer = api.login(device, username, "wrong-password")
            took[username].append(time.perf_counter() - started)
            checks[username].append(api.hasher.checks)
            bodies[username].add((answer.status_code, answer.text))
    assert bodies["cash"] == bodies["nobody"]
    [(status, text)] = bodies["cash"]
    assert status == 401 and '"code":"login_failed"' in text
    # one password check each: the same cost, whoever asks
    assert checks == {"cash": [1, 1], "nobody": [1, 1]}
    assert abs(min(took["cash"]) - min(took["nobody"])) < CHECK_S * 0.75
    # and the lockout too does not tell who exists
    for username in ("cash", "nobody"):
        for _ in range(3):
            api.login(device, username, "wrong-password")
    locked = [api.login(device, username, "wrong-password") for username in ("cash", "nobody")]
    assert [r.status_code for r in locked] == [423, 423]
    assert locked[0].json()["code"] == locked[1].json()["code"] == "login_locked"


# -- item 3: revocation, through `workstation admin`, at the next request --------


def assert_refused(answer: Any, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["code"] == code and body["message_zh"] and body["message_en"]


def test_disable_device_refuses_its_token_and_ends_its_sessions(
    api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    api.auth.create_clerk("cash", "cash", ["cashier"], PASSWORD)
    a, b = api.enroll("window-a"), api.enroll("window-b")
    on_a, on_b = api.session(a, "cash"), api.session(b, "cash")
    api.admin("disable-device", "window-a")
    assert_refused(api.pull(on_a), 401, "device_unknown")
    assert_refused(api.login(a, "cash"), 401, "device_unknown")
    assert api.pull(on_b).status_code == 200
    [(target, outcome, detail)] = api.audited("disable_device")
    assert (target, outcome, detail) == ("window-a", "ok", "1 sessions ended")
    capsys.readouterr()
    api.admin("list-devices")
    listed = {line.split()[1]: line.split()[2] for line in capsys.readouterr().out.splitlines()}
    assert listed == {"window-a": "disabled", "window-b": "active"}


def test_disable_clerk_ends_their_sessions_and_logins(api: Api) -> None:
    api.auth.create_clerk("cash", "cash", ["cashier"], PASSWORD)
    api.auth.create_clerk("other", "other", ["cashier"], PASSWORD)
    device = api.enroll("w1")
    cash, other = api.session(device, "cash"), api.session(device, "other")
    api.admin("disable-clerk", "cash")
    assert_refused(api.pull(cash), 401, "clerk_disabled")
    assert_refused(api.login(device, "cash"), 403, "clerk_disabled")
    # the wrong password of a disabled clerk tells nothing
    assert_refused(api.login(device, "cash", "wrong-password"), 401, "login_failed")
    assert api.pull(other).status_code == 200
    api.admin("enable-clerk", "cash")
    assert api.pull(api.session(device, "cash")).status_code == 200
    assert [o for _, o, _ in api.audited("disable_clerk")] == ["ok"]
    assert [o for _, o, _ in api.audited("enable_clerk")] == ["ok"]


def test_end_sessions_logs_the_clerk_out_everywhere(api: Api) -> None:
    api.auth.create_clerk("cash", "cash", ["cashier"], PASSWORD)
    a, b = api.enroll("a"), api.enroll("b")
    on_a, on_b = api.session(a, "cash"), api.session(b, "cash")
    api.admin("end-sessions", "cash")
    assert_refused(api.pull(on_a), 401, "session_ended")
    assert_refused(api.pull(on_b), 401, "session_ended")
    assert api.pull(api.session(a, "cash")).status_code == 200  # they may log in again
    assert api.audited("end_sessions") == [("cash", "ok", "2 sessions ended")]


def test_reset_password_ends_sessions_and_lifts_lockouts(api: Api) -> None:
    api.auth.create_clerk("cash", "cash", ["cashier"], PASSWORD)
    device = api.enroll("w1")
    on_it = api.session(device, "cash")
    other = api.enroll("w2")
    for _ in range(5):
        api.login(other, "cash", "wrong-password")
    assert api.login(other, "cash").status_code == 423
    api.admin("reset-password", "cash", "--password", "Nurse-station-7")
    assert_refused(api.pull(on_it), 401, "session_ended")
    assert_refused(api.login(device, "cash"), 401, "login_failed")  # the old one
    assert api.login(device, "cash", "Nurse-station-7").status_code == 200
    assert api.login(other, "cash", "Nurse-station-7").status_code == 200  # lifted
    assert [o for _, o, _ in api.audited("reset_password")] == ["ok"]


@pytest.mark.parametrize(
    ("command", "zh"),
    [
        (("disable-clerk", "nobody"), "没有用户名为“nobody”的操作员"),
        (("enable-clerk", "nobody"), "没有用户名为“nobody”的操作员"),
        (("end-sessions", "nobody"), "没有用户名为“nobody”的操作员"),
        (("reset-password", "nobody", "--password", "Nurse-station-7"), "没有用户名为“nobody”"),
        (("disable-device", "nowhere"), "没有编号或名称为“nowhere”的工作站"),
    ],
)
def test_unknown_clerks_and_devices_are_named_in_both_languages(
    api: Api, command: tuple[str, ...], zh: str
) -> None:
    with pytest.raises(SystemExit) as refused:
        api.admin(*command)
    message = str(refused.value.code)
    assert message.startswith("error: No ") and repr(command[1]) in message and zh in message
    action = command[0].replace("-", "_")
    assert [(t, o) for t, o, _ in api.audited(action)] == [(command[1], "refused")]


# -- item 6: the IT administrator handles no money and no patient data ------------


def test_no_command_is_the_administrator_s() -> None:
    from domain.commands import COMMANDS

    assert COMMANDS["cancel_card"].roles == frozenset({"supervisor"})
    assert not [kind for kind, command in COMMANDS.items() if "admin" in command.roles]


def test_the_administrator_role_cannot_join_a_command() -> None:
    from typing import ClassVar

    from domain.commands import Command

    with pytest.raises(TypeError, match="admin"):

        class WipeEverything(Command):
            kind: ClassVar[str] = "wipe_everything_test"
            roles: ClassVar[frozenset[str]] = frozenset({"supervisor", "admin"})
            names: ClassVar[tuple[str, str]] = ("清空", "wipe")


DATA_REQUESTS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/sync/pull", None),
    ("GET", "/sync/snapshot", None),
    ("GET", "/sync/snapshot/image?schema=x", None),
    ("POST", "/sync/push", {"device_time": "2026-01-01T00:00:00+00:00", "ops": []}),
    ("POST", "/leases", {"kind": "number_block", "resource": "card", "count": 10}),
    ("POST", "/leases/numbers", {"series": "card", "count": 10}),
    ("POST", "/leases/held", {"leases": []}),
]


def test_the_administrator_s_session_gets_no_patient_data_and_moves_no_money(api: Api) -> None:
    api.auth.create_clerk("it", "IT", ["admin"], PASSWORD)
    api.auth.create_clerk("cash", "cash", ["cashier"], PASSWORD)
    device = api.enroll("w1")
    it, cash = api.session(device, "it"), api.session(device, "cash")
    for method, path, body in DATA_REQUESTS:
        answer = api.http.request(method, path, json=body, headers=it)
        assert_refused(answer, 403, "role_no_data")
        assert "系统管理员" in answer.json()["message_zh"]
        assert "administrator" in answer.json()["message_en"]
        assert api.http.request(method, path, json=body, headers=cash).status_code != 403, path
    # the administrator logs in and out as anyone does
    assert api.http.post("/auth/logout", headers=it).status_code == 204


# -- item 6: passwords ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("Ab3-xyz", "at least 8 characters"),
        ("12345678", "most common passwords"),
        ("Password", "most common passwords"),
        ("qwerty123", "most common passwords"),
        ("88888888", "most common passwords"),
        ("a1234567", "most common passwords"),
        ("woaini1314", "most common passwords"),
        ("wangfang-2026", "must not contain the username"),
    ],
)
def test_weak_passwords_are_refused_with_a_clear_message(api: Api, password: str, why: str) -> None:
    with pytest.raises(SystemExit) as refused:
        api.admin(
            "create-clerk",
            "wangfang",
            "--name",
            "王芳",
            "--roles",
            "cashier",
            "--password",
            password,
        )
    message = str(refused.value.code)
    assert message.startswith("error: ") and why in message and "密码" in message
    api.auth.create_clerk("cash", "cash", ["cashier"], PASSWORD)
    with pytest.raises(SystemExit) as refused:
        api.admin("reset-password", "cash", "--password", password.replace("wangfang", "cash"))
    assert why in str(refused.value.code)
    assert [(t, o) for t, o, _ in api.audited("reset_password")] == [("cash", "refused")]
    device = api.enroll("w1")
    assert api.login(device, "cash").status_code == 200  # the old password still holds


def test_the_demo_s_passwords_pass_the_rules() -> None:
    from server.passwords import check_password
    from workstation.demo.seed import DEMO_CLERKS

    for username, _, _, password in DEMO_CLERKS:
        check_password(password, username)


# -- the workstation: a session the server will not give back ------------------------


async def test_a_clerk_the_server_no_longer_logs_in_is_sent_back_to_login(
    central: Central, tmp_path: Path
) -> None:
    """The session ran out and the clerk was disabled meanwhile: the
    workstation's quiet login with the password typed earlier is refused, so
    the clerk is logged out at the desk, told why, and cannot log in offline
    with the verifier cached here either."""
    station = await cashier_station(central, tmp_path)
    try:
        station.client.session_token = "ran-out"  # as after SESSION_HOURS
        central.auth.disable_clerk("cash")
        with contextlib.suppress(SyncError):
            await station.engine.sync_once()  # 401 session_invalid: token dropped
        with pytest.raises(NotLoggedIn):
            await station.engine.sync_once()  # the quiet login again: refused
        assert station.desk.clerk is None
        assert station.desk.ended is not None and station.desk.ended.code == "clerk_disabled"
        await asyncio.sleep(0.2)  # the verifier is dropped in a thread
        station.offline()
        with pytest.raises(LoginFailed) as offline:
            await station.desk.login("cash", HARNESS_PASSWORD)
        assert offline.value.code == "offline_unknown"
    finally:
        await station.close()
