"""Append-only JSON-lines logs of finished work (runs, episodes): what a resumed job reads to skip what is done."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Iterable


def read_log(path: Path) -> list[dict]:
    """The records in `path` (none if it does not exist). Records are appended last, so only a crash mid-append
    leaves a bad line, and only as the last one: it is dropped from the file too, so the next append starts on a
    line of its own. A bad line elsewhere was written by hand: ValueError naming it."""
    lines = path.read_text().splitlines() if path.is_file() else []
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                raise ValueError(f"{path} line {i + 1} is not JSON (edited by hand?): remove it to redo that work") from None
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text("".join(good + "\n" for good in lines[:-1]))
            os.replace(tmp, path)
    return records


def append_log(log: IO[str], records: Iterable[dict]) -> None:
    """Append `records` to an open log and force them to disk before the job moves on."""
    log.writelines(json.dumps(r) + "\n" for r in records)
    log.flush()
    os.fsync(log.fileno())
