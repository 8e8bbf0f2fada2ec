"""The workstation as a process: one per data directory, and it leaves when
its terminal goes away (instead of spinning against a dead terminal while
holding the replica)."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import sys
import termios
import time
from pathlib import Path

import pytest

from workstation.cli import main
from workstation.instance import AlreadyRunning, single_instance


def test_a_second_holder_of_a_data_directory_is_refused(tmp_path: Path) -> None:
    with single_instance(tmp_path):
        with pytest.raises(AlreadyRunning) as refused, single_instance(tmp_path):
            pass
        assert refused.value.pid == str(os.getpid())
        assert "already running" in refused.value.message()
        assert "已在另一个窗口运行" in refused.value.message()
    with single_instance(tmp_path):  # released with its holder
        pass


def test_the_cli_refuses_to_start_a_second_workstation_on_one_directory(tmp_path: Path) -> None:
    with single_instance(tmp_path.resolve()), pytest.raises(SystemExit) as stopped:
        main(["run", "--data-dir", str(tmp_path)])
    assert "already running" in str(stopped.value.code)
    assert not (tmp_path / "workstation.db").exists()  # nothing was opened


def _read_until(fd: int, text: bytes, timeout_s: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout_s
    while text not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{text!r} did not appear; last output: {seen[-500:]!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
    return seen


def _wait_for_exit(pid: int, timeout_s: float) -> int | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.1)
    return None


@pytest.mark.skipif(sys.platform != "linux", reason="uses a Linux pseudo-terminal")
def test_the_demo_leaves_when_its_terminal_is_closed(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    makefile = tmp_path / "Makefile"
    demo = (
        f"{sys.executable} -c 'import sys; from workstation.cli import main; "
        f"main(sys.argv[1:])' demo --data-dir {data_dir} --patients 200 --lang en"
    )
    makefile.write_text(f"demo:\n\t{demo}\n")
    pid, terminal = pty.fork()
    if pid == 0:  # the child: the demo in the pseudo-terminal
        os.environ["TERM"] = "xterm-256color"
        # Under make, as `make demo` runs it: make, not the app, is the
        # terminal's controlling process, so only make gets SIGHUP; the app
        # just finds its terminal gone.
        os.execvp("make", ["make", "-s", "-f", str(makefile), "demo"])
    try:
        fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        _read_until(terminal, b"Username", timeout_s=90)
        os.close(terminal)  # the clerk closes the terminal window
        terminal = -1
        assert _wait_for_exit(pid, timeout_s=20) is not None, (
            "make is still waiting: the demo kept running after its terminal was closed"
        )
        pid = 0
        assert _released(data_dir, timeout_s=20), (
            "the demo kept running (and holding its data directory) after its terminal was closed"
        )
    finally:
        if terminal >= 0:
            os.close(terminal)
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        _kill_holder(data_dir)


def _released(data_dir: Path, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with single_instance(data_dir):
                return True
        except AlreadyRunning:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)


def _kill_holder(data_dir: Path) -> None:
    """Leave no demo behind, even if the test failed."""
    try:
        with single_instance(data_dir):
            return
    except AlreadyRunning as running:
        os.kill(int(running.pid), signal.SIGKILL)


def test_the_server_stops_cleanly_and_folds_its_log_into_the_file(tmp_path: Path) -> None:
    import socket
    import subprocess
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    db = tmp_path / "central.db"
    main(["admin", "--db", f"sqlite:///{db}", "migrate"])  # as a site does before the server
    server = subprocess.Popen(
        [sys.executable, "-m", "workstation.cli", "server", "--db", f"sqlite:///{db}"]
        + ["--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    assert r.status == 200
                break
            except OSError:
                assert server.poll() is None, "the server did not start"
                assert time.monotonic() < deadline, "the server did not answer"
                time.sleep(0.2)
        assert Path(f"{db}-wal").exists()  # the server has the database open
        server.send_signal(signal.SIGINT)  # what Ctrl+C or a service manager's stop sends
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    # every connection was closed: the last one folded the log into the file
    assert not Path(f"{db}-wal").exists()
