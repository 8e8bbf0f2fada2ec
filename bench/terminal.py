"""``workstation run`` in a terminal of its own (a pseudo-terminal, 120 x 36),
for the benchmark's cold-start and idle figures. The data directory is one
``bench.window`` prepared: enrolled, bootstrapped, its device token in the
file store, English.

    python -m bench.terminal cold-start --data-dir DIR --runs N
    python -m bench.terminal idle --data-dir DIR --user U --password P --seconds S [--server-pid PID]

cold-start: each run starts ``workstation run`` and times it until the login
screen is drawn (its "Username" label has reached the terminal), then quits
it (Ctrl+Q) and waits for it to end; one run first, not timed, writes the
bytecode if missing.

idle: starts it, logs in by typing as a clerk does, opens the cashier desk
(F2), lets it settle, then reads the process's CPU time (user + system, all
its threads, ``/proc/PID/stat``) over ``--seconds`` of wall time while nothing
is typed; the server's process too, when its pid is given.

The terminal's output is read all the while, as a terminal does: an app whose
output is not read blocks on writing it. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import sys
import termios
import time
from pathlib import Path

ROWS, COLUMNS = 36, 120
WORKSTATION = str(Path(sys.executable).with_name("workstation"))
ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[PX^_][^\x1b]*\x1b\\|.)")
LOGIN_MARK = "Username"
HOME_MARK = "Choose your desk"
CASHIER_MARK = "No patient"
CTRL_Q = b"\x11"
F2 = b"\x1bOQ"
ENTER = b"\r"
SETTLE_S = 3.0


class Terminal:
    """One ``workstation run`` process on a pseudo-terminal."""

    def __init__(self, data_dir: Path) -> None:
        self.started = time.perf_counter()
        pid, fd = pty.fork()
        if pid == 0:  # the child: the terminal is its stdin, stdout and stderr
            try:
                fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
                # Bytecode cached, as after any install (this machine's
                # environment may say not to write it: then every start
                # would compile the project's own modules again).
                env = {
                    k: v
                    for k, v in os.environ.items()
                    if not k.startswith("TEXTUAL") and k != "PYTHONDONTWRITEBYTECODE"
                }
                env["TERM"] = "xterm-256color"
                os.execve(
                    WORKSTATION,
                    [WORKSTATION, "run", "--data-dir", str(data_dir), "--lang", "en"],
                    env,
                )
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        self.text = ""  # everything drawn so far, escape sequences taken out
        self.exit_status: int | None = None

    def read(self, timeout_s: float) -> None:
        """Read what the app wrote, for up to ``timeout_s``."""
        ready, _, _ = select.select([self.fd], [], [], timeout_s)
        if not ready:
            return
        try:
            data = os.read(self.fd, 1 << 16)
        except OSError:  # the app ended: the terminal is gone
            data = b""
        if not data:
            self._reap(block=True)
            raise RuntimeError(f"workstation run ended (status {self.exit_status}):\n{self.tail()}")
        self.text += ANSI.sub("", data.decode("utf-8", "replace"))

    def wait_for(self, mark: str, timeout_s: float = 60.0) -> float:
        """Read until ``mark`` has been drawn since the last mark; returns when."""
        deadline = time.monotonic() + timeout_s
        while mark not in self.text:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{mark!r} was not drawn within {timeout_s} s:\n{self.tail()}")
            self.read(0.05)
        at = time.perf_counter()
        self.text = self.text[self.text.index(mark) + len(mark) :]
        return at

    def drain(self, seconds: float) -> None:
        deadline = time.perf_counter() + seconds
        while (left := deadline - time.perf_counter()) > 0:
            self.read(min(left, 0.1))
            self.text = self.text[-4096:]

    def type(self, data: bytes) -> None:
        os.write(self.fd, data)

    def tail(self) -> str:
        return self.text[-2000:]

    def _reap(self, block: bool) -> bool:
        if self.exit_status is not None:
            return True
        pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
        if pid == 0:
            return False
        self.exit_status = os.waitstatus_to_exitcode(status)
        return True

    def quit(self, timeout_s: float = 10.0) -> None:
        """Ctrl+Q, as a clerk leaves; SIGTERM, then SIGKILL, if it does not."""
        with contextlib.suppress(OSError):
            self.type(CTRL_Q)
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, sig)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if self._reap(block=False):
                    os.close(self.fd)
                    return
                with contextlib.suppress(RuntimeError, OSError):
                    self.read(0.05)
        raise RuntimeError(f"workstation run (pid {self.pid}) did not end")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cold_start(data_dir: Path, runs: int) -> dict[str, object]:
    """``runs`` timed starts after one that is not timed (it writes the
    bytecode if missing)."""
    seconds = []
    for _ in range(runs + 1):
        terminal = Terminal(data_dir)
        try:
            seconds.append(terminal.wait_for(LOGIN_MARK) - terminal.started)
        finally:
            terminal.quit()
    return {"seconds": seconds[1:], "first_s": seconds[0]}


def idle(data_dir: Path, user: str, password: str, seconds: float, server_pid: int | None) -> dict:
    terminal = Terminal(data_dir)
    try:
        terminal.wait_for(LOGIN_MARK)
        terminal.type(user.encode() + ENTER + password.encode() + ENTER)
        terminal.wait_for(HOME_MARK)
        terminal.type(F2)
        terminal.wait_for(CASHIER_MARK)
        terminal.drain(SETTLE_S)  # the first sync cycle after the login, the number blocks
        wall0, app0 = time.perf_counter(), cpu_seconds(terminal.pid)
        server0 = cpu_seconds(server_pid) if server_pid else 0.0
        terminal.drain(seconds)
        wall = time.perf_counter() - wall0
        app = cpu_seconds(terminal.pid) - app0
        server = cpu_seconds(server_pid) - server0 if server_pid else None
    finally:
        terminal.quit()
    return {
        "wall_s": wall,
        "app_cpu_s": app,
        "server_cpu_s": server,
        "settle_s": SETTLE_S,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    cold = sub.add_parser("cold-start")
    cold.add_argument("--data-dir", type=Path, required=True)
    cold.add_argument("--runs", type=int, default=5)
    quiet = sub.add_parser("idle")
    quiet.add_argument("--data-dir", type=Path, required=True)
    quiet.add_argument("--user", required=True)
    quiet.add_argument("--password", required=True)
    quiet.add_argument("--seconds", type=float, default=20.0)
    quiet.add_argument("--server-pid", type=int)
    args = parser.parse_args()
    if args.mode == "cold-start":
        result = cold_start(args.data_dir, args.runs)
    else:
        result = idle(args.data_dir, args.user, args.password, args.seconds, args.server_pid)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
