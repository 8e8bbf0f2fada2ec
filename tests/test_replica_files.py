"""The replica holds patients' data and clerks' cached password hashes: its
files are its owner's alone (0600, in a 0700 directory) whatever the umask,
and a replica left readable by an older release is tightened when opened."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from local_db.store import LocalStore
from tests.harness import Central, cashier_station
from workstation.desk import RegistrationDraft
from workstation.instance import single_instance
from workstation.secrets import FileSecretStore

ZHANG = RegistrationDraft("张三丰", "", "", "resident_id", "11010519491231002X", "13812345678")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask: what is made without saying otherwise is readable by all."""
    before = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(before)


def test_a_new_replica_is_its_owner_s_alone(tmp_path: Path, umask_022: None) -> None:
    data = tmp_path / "data"
    data.mkdir()  # 0755
    store = LocalStore(data / "workstation.db")
    try:
        store.set_meta("device_id", "dev-1")  # a write: the log and its index exist now
        files = [data / "workstation.db", data / "workstation.db-wal", data / "workstation.db-shm"]
        assert all(f.exists() for f in files)
        assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
        assert mode(data) == 0o700
    finally:
        store.close()


def test_a_replica_of_an_older_release_is_tightened_when_opened(
    tmp_path: Path, umask_022: None
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    LocalStore(data / "workstation.db").close()
    os.chmod(data, 0o755)  # as release 0.2 left them
    os.chmod(data / "workstation.db", 0o644)
    (data / "workstation.db-journal").write_bytes(b"")  # any leftover beside it
    os.chmod(data / "workstation.db-journal", 0o644)
    store = LocalStore(data / "workstation.db")
    try:
        assert mode(data / "workstation.db") == 0o600
        assert mode(data / "workstation.db-journal") == 0o600
        assert mode(data) == 0o700
    finally:
        store.close()


def test_a_shared_directory_is_left_as_it_is(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # like /tmp: not the replica's to close
    LocalStore(shared / "workstation.db").close()
    assert mode(shared) == 0o1777
    assert mode(shared / "workstation.db") == 0o600


async def test_a_workstation_s_data_directory_is_its_owner_s_alone(
    central_sqlite: Central, tmp_path: Path, umask_022: None
) -> None:
    """Bootstrapped from a replica image, with a receipt printed, secrets kept
    in a file and the data directory held: nothing in it readable by others."""
    data = tmp_path / "a"
    with single_instance(data):
        assert mode(data) == 0o700
        station = await cashier_station(central_sqlite, tmp_path)  # its replica: a/replica.db
        try:
            assert station.store.get_meta("epoch") is not None  # bootstrapped
            FileSecretStore(data / "secrets.json").set("device_token", "t")
            reg = await station.register(ZHANG)
            await station.issue_card(reg.patient_id, "50", "cash")  # prints a receipt file
            found = {p: mode(p) for p in data.rglob("*")}
            assert any(p.parent.name == "receipts" for p in found)
            loose = {
                str(p.relative_to(data)): oct(m)
                for p, m in found.items()
                if m != (0o700 if p.is_dir() else 0o600)
            }
            assert loose == {}
        finally:
            await station.close()


def test_the_server_s_replica_images_are_its_owner_s_alone(
    central_sqlite: Central, umask_022: None
) -> None:
    images = central_sqlite.app.state.snapshots
    image = images.build()
    assert mode(images.directory) == 0o700
    assert mode(images.directory / image.file) == 0o600
