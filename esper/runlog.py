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


class LogError(ValueError):
    """A log that cannot be continued as asked (one line, naming what to do)."""


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


class ResumableLog:
    """The one resume mechanism of a job made of independent pieces (a comparison's runs, an evaluation's episode
    sets, a recording's episodes): each finished piece is appended at once (fsynced), so a crash loses at most the
    piece in progress, and the same command with --resume plays only what is missing.

    The first line holds the job's `identity` (its config, seeds, agent hash…): a resumed job must have the same
    one, else LogError names the fields that differ — finished pieces must stay comparable. Without `resume`, a
    log that already holds pieces is refused rather than overwritten."""

    def __init__(self, path: Path, identity: dict, resume: bool) -> None:
        self.path, self.identity = path, json.loads(json.dumps(identity))  # JSON-normalised, as read back
        records = read_log(path)
        if records and not resume:
            raise LogError(f"{path.parent} already holds finished work ({path.name}): pass --resume to continue it, "
                           "or choose another --out")
        if records and resume:
            saved = _flat(records[0].get("identity", {}))
            now = _flat(self.identity)
            changed = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
            if changed:
                raise LogError(f"--resume: the job differs from the one in {path} in {', '.join(changed)}: resume "
                               "with the same settings, or choose another --out")
        if not records:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w") as f:
                append_log(f, [{"identity": self.identity}])
        self.records: list[dict] = records[1:]
        """The finished pieces, in the order they finished."""

    def append(self, record: dict) -> None:
        """Add one finished piece, on disk (fsynced) before this returns."""
        with open(self.path, "a") as f:
            append_log(f, [record])
        self.records.append(record)
