"""Compact JSON text, for rows in the change log and answers in the outbox.

One encoder built once: ``json.dumps`` with options builds a new encoder on
every call, which shows on the push hot path."""

from __future__ import annotations

import json

to_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
