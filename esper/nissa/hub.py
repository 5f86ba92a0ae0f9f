"""Telemetry hub and backends. Events are leyline pydantic models; each backend gets every event."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Protocol, TextIO

from esper.leyline.telemetry import EpochEvent, TelemetryEvent


class Backend(Protocol):
    def write(self, event: TelemetryEvent, run: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class TelemetryHub:
    """Fans events out to backends, stamping each with the run's identity (run id, arm, seed …)."""

    def __init__(self, backends: list[Backend] | None = None, **run: Any) -> None:
        self.backends = list(backends or [])
        self.run = run
        self.counts: dict[str, int] = {}

    def __call__(self, event: TelemetryEvent) -> None:
        self.counts[event.kind] = self.counts.get(event.kind, 0) + 1
        for backend in self.backends:
            backend.write(event, self.run)

    def close(self) -> None:
        for backend in self.backends:
            backend.close()


class ConsoleBackend:
    """One progress line per epoch; lifecycle events as short indented lines."""

    def __init__(self, stream: TextIO | None = None, lifecycle: bool = True) -> None:
        self.stream, self.lifecycle = stream or sys.stdout, lifecycle

    def write(self, event: TelemetryEvent, run: dict[str, Any]) -> None:
        tag = " ".join(f"{k}={v}" for k, v in run.items() if k in ("arm", "seed"))
        if isinstance(event, EpochEvent):
            extra = event.params_active + event.params_fossilized
            line = (f"[{tag}] epoch {event.epoch:3d}  loss {event.train_loss:.4f}  val_loss {event.val_loss:.4f}  "
                    f"val_metric {event.val_metric:7.4f}  params {event.params_host + extra:,} (+{extra / max(event.params_host, 1):.1%})")
        elif self.lifecycle and event.kind in ("germinate", "cull", "fossilize", "audit", "rollback"):
            fields = event.model_dump(exclude={"kind", "epoch"})
            line = f"[{tag}]   {event.kind:<9} " + " ".join(f"{k}={v}" for k, v in fields.items())
        else:
            return
        print(line, file=self.stream, flush=True)

    def close(self) -> None:
        pass


class ParquetBackend:
    """One row per event (columns: run fields, kind, epoch, and the event's fields as JSON + flat copies)."""

    def __init__(self, path: str | Path, flush_every: int = 200) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        self.flush_every = flush_every

    def write(self, event: TelemetryEvent, run: dict[str, Any]) -> None:
        data = event.model_dump(mode="json")
        row = {**{f"run_{k}": str(v) for k, v in run.items()}, "kind": event.kind, "epoch": event.epoch,
               "slot": data.get("slot"), "payload": json.dumps(data)}
        self.rows.append(row)
        if len(self.rows) % self.flush_every == 0:
            self.flush()

    def flush(self) -> None:
        """Rewrite the file atomically with every row so far (a crash never loses more than the last batch)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.rows:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".parquet.tmp")
        pq.write_table(pa.Table.from_pylist(self.rows), tmp)
        tmp.replace(self.path)

    def close(self) -> None:
        self.flush()


class TensorBoardBackend:
    """Scalars per epoch under namespaced keys (val/metric, params/…); lifecycle events as text."""

    def __init__(self, logdir: str | Path) -> None:
        from esper.nissa.tensorboard import ScalarWriter

        self.writer = ScalarWriter(logdir, flush_secs=120)

    def write(self, event: TelemetryEvent, run: dict[str, Any]) -> None:
        from esper.leyline import telemetry as t

        if isinstance(event, EpochEvent):
            self.writer.scalars({t.TRAIN_LOSS: event.train_loss, t.VAL_LOSS: event.val_loss, t.VAL_METRIC: event.val_metric,
                                 t.PARAMS_HOST: event.params_host, t.PARAMS_ACTIVE: event.params_active,
                                 t.PARAMS_FOSSILIZED: event.params_fossilized}, event.epoch)
        elif event.kind in ("germinate", "cull", "fossilize", "rollback"):
            self.writer.text(f"events/{event.kind}", event.model_dump_json(), event.epoch)

    def close(self) -> None:
        self.writer.close()


def read_events(path: str | Path):
    """A run's telemetry as a pandas DataFrame, with each event's fields expanded into columns."""
    import pandas as pd

    df = pd.read_parquet(path)
    fields = pd.json_normalize([json.loads(p) for p in df["payload"]])
    fields = fields.drop(columns=[c for c in ("kind", "epoch", "slot") if c in fields.columns])
    return pd.concat([df.drop(columns=["payload"]), fields], axis=1)
