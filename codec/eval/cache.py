"""The sweep's result cache: every measured point appended to a JSON-lines file, keyed by
codec, exact settings, library versions and the input's sha256, so that an interrupted
sweep resumes where it stopped when the same command is run again."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

CACHE_VERSION = 1


class ResultCache:
    """Append-only JSON-lines cache of measured points, keyed by a hash of
    (codec, exact settings, library versions, input hash). A truncated last line
    (an interrupted write) is ignored."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path else None
        self.rows: dict[str, dict] = {}
        if self.path and self.path.exists():
            with open(self.path, "r", encoding="utf-8") as f:
                for line in f:
                    line = line.strip()
                    if not line:
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if isinstance(row, dict) and "key" in row:
                        self.rows[row["key"]] = row
        self._fh = None

    @staticmethod
    def key(**parts: Any) -> str:
        blob = json.dumps({"v": CACHE_VERSION, **parts}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def get(self, key: str) -> dict | None:
        return self.rows.get(key)

    def put(self, row: dict) -> None:
        self.rows[row["key"]] = row
        if self.path is None:
            return
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # start a fresh line if the previous run died mid-line
            needs_nl = False
            if self.path.exists() and self.path.stat().st_size > 0:
                with open(self.path, "rb") as f:
                    f.seek(-1, os.SEEK_END)
                    needs_nl = f.read(1) != b"\n"
            self._fh = open(self.path, "a", encoding="utf-8")
            if needs_nl:
                self._fh.write("\n")
        self._fh.write(json.dumps(row, sort_keys=True) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
