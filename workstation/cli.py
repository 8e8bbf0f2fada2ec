"""The ``workstation`` command.

workstation demo                       the whole product on this machine
workstation server --db URL            the central server
workstation admin --db URL migrate     the database's schema, after installing a release
workstation admin --db URL ...         clerks, enrolment codes, epochs, snapshots
workstation admin --db URL verify-audit  the audit trail, the op log and the ledger prove themselves
workstation enroll --server URL --code CODE
workstation run                        a real workstation (after enroll)
workstation run --headless             the same without its window: JSON lines on stdin/stdout
workstation commands                   every command a clerk can perform, and who may
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from server.auth import AuthService
    from workstation.builder import Workstation

DEFAULT_DATA_DIR = Path.home() / ".local" / "share" / "hospital-workstation"

HEADLESS_HELP = """\
--headless: one JSON object a line on stdin, one answer a line on stdout
(UTF-8), in order; logs go to <data dir>/workstation.log.

  {"id": 1, "cmd": "login", "username": "wangfang", "password": "..."}
  {"id": 1, "ok": true, "clerk": {...}, "mode": "online"}
  {"id": 2, "cmd": "top_up", "card_no": "1000000008", "amount": "12.50"}
  {"id": 2, "ok": true, "op_id": "01J...", "receipt_no": "...", "amount_fen": 1250,
   "confirmed": true, "state": "confirmed", ...}
  {"id": 3, "cmd": "top_up", "card_no": "1000000008", "amount": "12.345"}
  {"id": 3, "ok": false, "code": "amount_too_many_decimals", "message_zh": "...",
   "message_en": "..."}

commands and their fields (money is text as a clerk types it, "12.50"; answers
give integer fen):
  login username password          logout
  register name sex birth_date doc_type doc_no phone address
  issue_card patient_id [amount] [method]      top_up card_no amount [method]
  cancel_card card_no reason       search query [limit]
  patient patient_id | card_no | doc_no        status
  issues [all]                     resolve_issue issue_id [note]
  sync [timeout]                   quit
method: cash (default), bank_card, wechat, alipay. A committed action answers
state "confirmed" (the server applied it), "provisional" (committed here, to
be sent) or "refused" (the server refused it at once: see issues). Lines with
"event" are unsolicited: ready, status (sync status changed), stopped. A
status with "clerk": null and "error_code" session_ended, clerk_disabled or
device_unknown: the server ended the clerk's session (an administrator, a
lockout); log in again.
End of input, quit or SIGTERM stop the workstation in order.
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="workstation",
        description="Hospital window workstation",
        epilog="`workstation run --headless` runs a workstation without its window, scripted "
        "with JSON lines on stdin and stdout: `workstation run --help` describes the protocol.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo", help="run the demo: embedded central server, demo hospital, this workstation"
    )
    demo.add_argument("--data-dir", type=Path, default=Path("demo-data"))
    demo.add_argument("--patients", type=int, default=10_000)
    demo.add_argument("--lang", choices=["zh", "en"], default=None)
    demo.add_argument("--reset", action="store_true", help="start again from a fresh demo hospital")

    server = sub.add_parser("server", help="run the central server")
    server.add_argument(
        "--db", required=True, help="sqlite:///path/central.db or postgresql://user@host/db"
    )
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--port", type=int, default=8700)
    server.add_argument(
        "--snapshot-dir",
        type=Path,
        help="where replica images for new workstations are kept (default: beside a SQLite "
        "database file; for PostgreSQL a temporary directory of the server, shared by its "
        "--workers)",
    )
    server.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes (PostgreSQL only): one uses at most one core; e.g. one a core",
    )
    server.add_argument(
        "--pool-size",
        type=int,
        help="database connections of each process (default 10, and as many again at peaks); "
        "mind PostgreSQL's max_connections with several --workers",
    )
    server.add_argument(
        "--certfile",
        type=Path,
        help="serve HTTPS with this certificate (PEM, with its chain); needs --keyfile. "
        "Without it the server speaks plain HTTP: put it behind a TLS proxy",
    )
    server.add_argument("--keyfile", type=Path, help="the certificate's private key (PEM)")
    server.add_argument(
        "--docs",
        action="store_true",
        help="serve the interactive API pages /docs and /redoc (off by default; "
        "/openapi.json is always served)",
    )
    server.add_argument(
        "--access-log",
        action="store_true",
        help="log every request (off by default: the line was 8%% of the server's time in "
        "one-op pushes)",
    )

    admin = sub.add_parser(
        "admin",
        help="administer the central server's database",
        description="Administer the central server's database. After installing a new "
        "release (and on a new, empty database), back the database up and run `migrate` "
        "before `workstation server`: the other commands, like the server, refuse a "
        "database whose schema is not the release's (seed-demo, for a demo database, "
        "migrates it itself).",
    )
    admin.add_argument("--db", required=True)
    admin.add_argument(
        "--operator",
        metavar="NAME",
        help="who is running this command, for the audit trail (which names the OS user too)",
    )
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)
    admin_sub.add_parser(
        "migrate",
        help="bring the database's schema up to this release (creates it in an empty "
        "database; a release-0.1.0 database is recognised); back it up first",
    )
    clerk = admin_sub.add_parser("create-clerk", help="create a clerk (asks for the password)")
    clerk.add_argument("username")
    clerk.add_argument("--name", required=True)
    clerk.add_argument(
        "--roles",
        required=True,
        help="comma-separated: cashier,admission,registrar,supervisor,admin",
    )
    clerk.add_argument("--password", help="omit to be asked (recommended)")
    code = admin_sub.add_parser("enroll-code", help="make a one-time code to enroll a workstation")
    code.add_argument("--device-name", required=True)
    admin_sub.add_parser("list-clerks")
    admin_sub.add_parser("list-devices", help="the enrolled workstations: id, name, state")
    for name, what in (
        ("disable-clerk", "disable a clerk: no login any more, their sessions end at once"),
        ("enable-clerk", "let a disabled clerk log in again"),
        ("end-sessions", "end a clerk's sessions at every workstation: they log in again"),
    ):
        admin_sub.add_parser(name, help=what).add_argument("username")
    reset = admin_sub.add_parser(
        "reset-password",
        help="give a clerk a new password (asks for it): their sessions end, lockouts lift",
    )
    reset.add_argument("username")
    reset.add_argument("--password", help="omit to be asked (recommended)")
    admin_sub.add_parser(
        "disable-device",
        help="disable a workstation (id or name): its token and sessions end at once; "
        "enrolling it again takes a new code",
    ).add_argument("device")
    admin_sub.add_parser(
        "new-epoch", help="after restoring the database from a backup: workstations re-bootstrap"
    )
    admin_sub.add_parser("show-policy", help="print the hospital's policy")
    policy = admin_sub.add_parser("set-policy", help="change the policy, e.g. offline_login_days=3")
    policy.add_argument("settings", nargs="+", metavar="KEY=VALUE")
    snapshot = admin_sub.add_parser(
        "build-snapshot",
        help="build the replica image new workstations bootstrap from (e.g. nightly, or after "
        "new-epoch), so the first one does not wait for it",
    )
    snapshot.add_argument(
        "--dir",
        type=Path,
        help="the server's --snapshot-dir (default: beside a SQLite database file)",
    )
    seed = admin_sub.add_parser(
        "seed-demo",
        help="fill an empty database with the demo hospital (migrates it first)",
    )
    seed.add_argument("--patients", type=int, default=10_000)
    admin_sub.add_parser(
        "verify-audit",
        help="check the audit trail's and the op log's hash chains and the ledger against the "
        "op log; names the first broken record and exits non-zero if anything is broken",
    )

    enroll = sub.add_parser("enroll", help="enroll this workstation with a one-time code")
    enroll.add_argument("--server", required=True)
    enroll.add_argument("--code", required=True)
    enroll.add_argument("--device-name", required=True)
    enroll.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    enroll.add_argument(
        "--cafile",
        type=Path,
        help="the certificate (PEM) of the hospital's own certificate authority, when the "
        "server's https:// certificate is not signed by one the system trusts (kept for "
        "`workstation run`; the WORKSTATION_CA_FILE environment variable overrides it)",
    )
    enroll.add_argument(
        "--secrets",
        choices=["keyring", "file"],
        default="keyring",
        help="where to keep the device token; 'file' only on a machine you control",
    )

    run = sub.add_parser(
        "run",
        help="open the workstation (after enroll); --headless: scripted, no window",
        description="Open the workstation (after `workstation enroll`).",
        epilog=HEADLESS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    run.add_argument("--lang", choices=["zh", "en"], default=None)
    run.add_argument(
        "--headless",
        action="store_true",
        help="no window: the same desk and sync engine, driven by JSON lines on stdin, "
        "answering with JSON lines on stdout (below)",
    )

    sub.add_parser(
        "commands", help="list every command a clerk can perform, with the roles that may"
    )

    args = parser.parse_args(argv)
    if args.command == "commands":
        print_commands()
    elif args.command == "server":
        from workstation.serve import ServerOptions, serve

        if args.workers < 1 or (args.pool_size is not None and args.pool_size < 1):
            parser.error("--workers and --pool-size take a number from 1")
        if (args.certfile is None) != (args.keyfile is None):
            parser.error("--certfile and --keyfile go together")
        serve(
            ServerOptions(
                db=args.db,
                host=args.host,
                port=args.port,
                snapshot_dir=args.snapshot_dir,
                workers=args.workers,
                pool_size=args.pool_size,
                access_log=args.access_log,
                certfile=args.certfile,
                keyfile=args.keyfile,
                docs=args.docs,
            )
        )
    elif args.command == "admin":
        _admin(args)
    else:  # the workstation's own commands: one process per data directory
        from workstation.instance import AlreadyRunning, single_instance

        try:
            with single_instance(args.data_dir.resolve()):
                _workstation_command(args)
        except AlreadyRunning as exc:
            sys.exit(exc.message())


def print_commands() -> None:
    """The command registry as a table: kind, 中文, English, roles (code and name)."""
    import unicodedata

    from domain.commands import COMMANDS
    from domain.roles import ROLE_NAMES

    def width(text: str) -> int:
        return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)

    def cell(text: str, size: int) -> str:
        return text + " " * max(size - width(text), 0)

    rows = [("kind", "中文", "English", "roles")]
    for kind, command in COMMANDS.items():
        roles = ", ".join(f"{r} {ROLE_NAMES[r][0]}" for r in sorted(command.roles))
        rows.append((kind, command.names[0], command.names[1], roles))
    sizes = [max(width(row[i]) for row in rows) + 2 for i in range(3)]
    for row in rows:
        print("".join(cell(text, size) for text, size in zip(row, sizes, strict=False)) + row[3])


def _workstation_command(args: argparse.Namespace) -> None:
    if args.command == "demo":
        from workstation.demo.run import run_demo

        run_demo(args.data_dir, patients=args.patients, language=args.lang, reset=args.reset)
    elif args.command == "enroll":
        _enroll(args)
    elif args.command == "run":
        _run(args)


def _admin(args: argparse.Namespace) -> None:
    from server.chain import acting, os_operator
    from server.db import make_engine
    from server.migrate import SchemaError

    engine = make_engine(args.db)
    try:
        with acting(os_operator(args.operator)):
            _admin_command(args, engine)
    except SchemaError as exc:
        sys.exit(f"error: {exc}")
    finally:
        engine.dispose()


def _admin_command(args: argparse.Namespace, engine: Engine) -> None:
    from sqlalchemy import select

    from domain.state import Policy
    from server.auth import AuthService
    from server.db import clerks, devices, load_policy
    from server.migrate import check_schema, migrate
    from server.site import save_policy, start_new_epoch

    if args.admin_command == "migrate":
        from server.migrate import display_url

        print(f"{display_url(engine)}: {migrate(engine).describe()}")
        return
    if args.admin_command == "seed-demo":
        migrate(engine)
    else:
        check_schema(engine)
    auth = AuthService(engine)
    if args.admin_command == "create-clerk":
        password = args.password or getpass.getpass(f"Password for {args.username}: ")
        try:
            clerk_id = auth.create_clerk(args.username, args.name, args.roles.split(","), password)
        except ValueError as exc:
            sys.exit(f"error: {exc}")
        print(f"created clerk {args.username} ({clerk_id})")
    elif args.admin_command in ADMIN_REVOCATIONS:
        try:
            print(_revoke(auth, args))
        except ValueError as exc:  # an unknown clerk or device, a refused password
            sys.exit(f"error: {exc}")
    elif args.admin_command == "list-devices":
        with engine.connect() as conn:
            for row in conn.execute(select(devices).order_by(devices.c.enrolled_at)):
                state = "active" if row.active else "disabled"
                print(f"{row.device_id}  {row.name:<24} {state:<9} enrolled {row.enrolled_at}")
    elif args.admin_command == "enroll-code":
        print(auth.create_enrollment_code(args.device_name))
    elif args.admin_command == "list-clerks":
        with engine.connect() as conn:
            for row in conn.execute(select(clerks).order_by(clerks.c.username)):
                state = "active" if row.active else "disabled"
                print(
                    f"{row.username:<16} {row.name:<12} {','.join(json.loads(row.roles)):<28} {state}"
                )
    elif args.admin_command == "new-epoch":
        epoch = start_new_epoch(engine)
        print(
            f"new server epoch {epoch}: workstations will re-bootstrap and re-send what the backup lost"
        )
    elif args.admin_command in ("show-policy", "set-policy"):
        with engine.connect() as conn:
            current = load_policy(conn)
        if args.admin_command == "set-policy":
            values = current.as_dict()
            for setting in args.settings:
                key, _, value = setting.partition("=")
                if key not in values or not value.isdigit():
                    sys.exit(
                        f"error: {setting!r}: use KEY=NUMBER with KEY one of {', '.join(values)}"
                    )
                values[key] = int(value)
            current = Policy.from_dict(values)
            save_policy(engine, current)
        for key, value in current.as_dict().items():
            print(f"{key} = {value}")
    elif args.admin_command == "build-snapshot":
        from server.db import is_sqlite
        from server.snapshots import SnapshotImages

        if args.dir is None and not is_sqlite(engine):
            sys.exit(
                "error: give --dir, the directory the server was started with (--snapshot-dir)"
            )
        images = SnapshotImages(engine, args.dir)
        image = images.build()
        auth.record(None, None, "build_snapshot", f"{image.epoch}:{image.cursor}", "ok")
        print(
            f"replica image {images.directory / image.file}: {image.rows} rows at change "
            f"{image.cursor}, {image.size / 1e6:.1f} MB, built in {image.build_s:.1f} s"
        )
    elif args.admin_command == "verify-audit":
        _verify_audit(engine)
    elif args.admin_command == "seed-demo":
        from workstation.demo.seed import seed_demo_hospital

        summary = seed_demo_hospital(engine, args.patients)
        print(
            f"seeded {summary.patients} patients, {summary.cards} cards, {summary.transfers} payments"
        )


def _verify_audit(engine: Engine) -> None:
    from server.verify import verify_audit

    report = verify_audit(engine)
    for chain, (seq, head) in sorted(report.heads.items()):
        print(f"{chain} chain head: record {seq}, hash {head}")
    print(
        f"{report.audit_records} audit records, {report.ops} ops, "
        f"{report.transfers} transfers checked"
    )
    if report.clean:
        print("clean: both chains unbroken, the ledger matches the op log")
        return
    shown = 20
    for problem in report.problems[:shown]:
        print(f"BROKEN {problem}")
    if len(report.problems) > shown:
        print(f"... and {len(report.problems) - shown} more")
    sys.exit(f"error: {len(report.problems)} problem(s); the first: {report.problems[0]}")


ADMIN_REVOCATIONS = (
    "disable-device",
    "disable-clerk",
    "enable-clerk",
    "end-sessions",
    "reset-password",
)


def _revoke(auth: AuthService, args: argparse.Namespace) -> str:
    """One of :data:`ADMIN_REVOCATIONS`, in force at the next request of any
    workstation; what was done, for the administrator."""
    command = args.admin_command
    if command == "disable-device":
        device_id, ended = auth.disable_device(args.device)
        return f"disabled workstation {args.device} ({device_id}); {ended} sessions ended"
    if command == "disable-clerk":
        ended = auth.disable_clerk(args.username)
        return f"disabled clerk {args.username}; {ended} sessions ended"
    if command == "enable-clerk":
        auth.enable_clerk(args.username)
        return f"enabled clerk {args.username}"
    if command == "end-sessions":
        ended = auth.end_sessions(args.username)
        return f"ended {ended} sessions of {args.username}"
    password = args.password or getpass.getpass(f"New password for {args.username}: ")
    ended = auth.reset_password(args.username, password)
    return f"new password for {args.username}; {ended} sessions ended, lockouts lifted"


def _enroll(args: argparse.Namespace) -> None:
    from sync.client import SyncError
    from workstation.builder import build_workstation
    from workstation.config import Settings
    from workstation.desk.core import enroll_workstation
    from workstation.secrets import SecretsUnavailable, open_secret_store

    try:
        secrets = open_secret_store(args.secrets, args.data_dir)
    except SecretsUnavailable as exc:
        sys.exit(f"error: {exc}")
    args.data_dir.mkdir(parents=True, exist_ok=True)
    cafile = str(args.cafile.resolve()) if args.cafile is not None else None
    if cafile is not None and not Path(cafile).is_file():
        sys.exit(f"error: --cafile {cafile}: no such file")
    warning = plain_http_warning(args.server)
    if warning:
        print(warning, file=sys.stderr)
    settings = Settings(
        server_url=args.server,
        device_name=args.device_name,
        window_name=args.device_name,
        secrets=args.secrets,
        cafile=cafile,
    )
    station = build_workstation(
        args.data_dir / "workstation.db", args.server, cafile=settings.ca_file()
    )

    async def enroll() -> str:
        try:
            return await enroll_workstation(
                station.client, station.store, args.code, args.device_name
            )
        finally:
            await station.aclose()

    try:
        token = asyncio.run(enroll())
    except SyncError as exc:
        sys.exit(f"error: {exc.message_en} / {exc.message_zh}")
    secrets.set("device_token", token)
    settings.save(args.data_dir)
    print(f"enrolled as {args.device_name}; device token kept in {secrets.description}")


def plain_http_warning(url: str) -> str | None:
    """A warning for a server reached over plain HTTP beyond this machine:
    passwords and patients' data would cross the network readable."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname in ("127.0.0.1", "localhost", "::1"):
        return None
    return (
        f"warning: {url} is plain HTTP: clerks' passwords and patients' data cross the network "
        "unencrypted. Use https:// (workstation server --certfile/--keyfile, or a TLS proxy).\n"
        f"警告：{url} 未加密（HTTP），操作员密码与患者数据将明文经过网络。请使用 https://。"
    )


def _run(args: argparse.Namespace) -> None:
    """The enrolled workstation in this data directory: its window, or
    (``--headless``) the protocol on stdin and stdout."""
    from workstation.builder import build_workstation
    from workstation.config import Settings
    from workstation.desk import DeskSettings
    from workstation.desk.i18n import default_language
    from workstation.secrets import SecretsUnavailable, open_secret_store

    try:
        settings = Settings.load(args.data_dir)
    except FileNotFoundError:
        sys.exit(
            f"error: {args.data_dir} holds no enrolled workstation; run `workstation enroll` first"
        )
    try:
        secrets = open_secret_store(settings.secrets, args.data_dir)
        token = secrets.get("device_token")
    except SecretsUnavailable as exc:
        sys.exit(f"error: {exc}")
    if token is None:
        sys.exit("error: no device token stored; enroll this workstation again")
    from workstation.logs import log_to_file

    stop_logging = log_to_file(args.data_dir / "workstation.log")
    station = build_workstation(
        args.data_dir / "workstation.db",
        settings.server_url,
        device_token=token,
        cafile=settings.ca_file(),
        settings=DeskSettings(
            hospital_name=settings.hospital_name,
            window_name=settings.window_name,
            receipts_dir=args.data_dir / "receipts",
        ),
    )
    try:
        if args.headless:
            _run_headless(station)
        else:
            from workstation.app import make_app, run_app

            run_app(
                make_app(
                    station.desk,
                    cashier=station.cashier,
                    language=args.lang or settings.language or default_language(),
                )
            )
    finally:
        station.store.close()
        stop_logging()


def _run_headless(station: Workstation) -> None:
    """Serve the protocol on stdin and stdout. Stdout is the protocol's alone:
    the protocol writes to a copy of it, and whatever else would print there
    (a library, a stray warning) goes to stderr instead."""
    import os

    from workstation.headless import run_headless
    from workstation.heap import settle_heap

    sys.stdout.flush()
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8", newline="\n")
    saved = os.dup(1)
    os.dup2(2, 1)
    settle_heap()
    try:
        run_headless(station, input_fd=sys.stdin.fileno(), output=protocol)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        with contextlib.suppress(OSError):  # the reader may be gone
            protocol.close()


if __name__ == "__main__":
    main()
