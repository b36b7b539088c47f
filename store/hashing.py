"""Content hashes: the unique keys that make every write idempotent."""

from __future__ import annotations

import hashlib
import json
import unicodedata
from typing import Any


def normalize_text(text: str) -> str:
    """NFC and collapsed whitespace: the same prompt typed twice is one row."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def content_hash(*parts: Any) -> str:
    """sha256 over a canonical JSON encoding of ``parts`` (order matters, dict order does not)."""
    payload = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def prompt_hash(text: str) -> str:
    return content_hash("prompt", normalize_text(text))
