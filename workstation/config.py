"""A workstation's settings, kept in ``<data dir>/workstation.json``."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, Field

from local_db.files import private_directory, private_file

ENV_CA_FILE = "WORKSTATION_CA_FILE"


class Settings(BaseModel):
    server_url: str
    device_name: str = "window"
    window_name: str = "收费窗口"
    hospital_name: str = "示范医院 Demo Hospital"
    secrets: str = Field("keyring", pattern="^(keyring|file)$")
    language: str | None = None  # None: from the locale
    # a private CA's certificate (PEM) for an https:// server_url; None: the
    # system's trusted authorities (or $WORKSTATION_CA_FILE)
    cafile: str | None = None

    def ca_file(self) -> str | None:
        """The CA certificate to trust for the server: the environment's
        (``WORKSTATION_CA_FILE``) if set, else the one chosen at enrolment."""
        return os.environ.get(ENV_CA_FILE) or self.cafile

    @staticmethod
    def path(data_dir: Path) -> Path:
        return data_dir / "workstation.json"

    @classmethod
    def load(cls, data_dir: Path) -> Settings:
        return cls.model_validate(json.loads(cls.path(data_dir).read_text(encoding="utf-8")))

    def save(self, data_dir: Path) -> None:
        private_directory(data_dir)
        private_file(self.path(data_dir))
        self.path(data_dir).write_text(self.model_dump_json(indent=2), encoding="utf-8")
