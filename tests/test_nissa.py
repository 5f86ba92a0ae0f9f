"""Nissa: the hub fans typed events out; Parquet round-trips every event type; console, TensorBoard and the
lifecycle plot work on a real run's telemetry."""

from __future__ import annotations

import io
import math
import subprocess
import sys
import typing
from pathlib import Path

import pandas as pd
import pytest
import torch

from _support import tiny_world
from esper.leyline import telemetry as t
from esper.nissa import ConsoleBackend, ParquetBackend, TelemetryHub, TensorBoardBackend, read_events
from esper.tamiyo import ScheduleTamiyo
from esper.tolaria.builder import build_run, build_world_task
from esper.tolaria.run import run_training

ROOT = Path(__file__).resolve().parents[1]
PLOT_RUN = ROOT / "experiments" / "plot_run.py"

EVENTS: list[t.TelemetryEvent] = [
    t.EpochEvent(epoch=1, train_loss=2.25, val_loss=2.125, val_metric=0.375, params_host=6418,
                 params_active=600, params_fossilized=0),
    t.StageChangeEvent(epoch=2, slot="block3", from_stage="DORMANT", to_stage="GERMINATED", blueprint="conv_light",
                       reason="germinate"),
    t.StageChangeEvent(epoch=3, slot="block1", from_stage="RESETTING", to_stage="DORMANT", blueprint=None, reason="reset"),
    t.GateEvent(epoch=3, slot="block2", gate="G2", passed=False, reason="trained 0 < min_training_epochs 1"),
    t.GateEvent(epoch=4, slot="block2", gate="G3", passed=True, reason="ok"),
    t.GerminateEvent(epoch=4, slot="block3", blueprint="bottleneck", seed_params=1234, tempo=5, curve="cosine"),
    t.CullEvent(epoch=5, slot="block2", blueprint="norm", from_stage="HOLDING", reason="contribution -0.0100 < -0.005"),
    t.FossilizeEvent(epoch=6, slot="block3", blueprint="bottleneck", seed_params=1234),
    t.AuditEvent(epoch=6, slot="block2", blueprint="conv_light", verdict="wither", by="emrakul", contribution=0.0125,
                 seed_params=2352, reason="audit block2"),
    t.AuditEvent(epoch=9, slot="block2", blueprint="conv_light", verdict="cull", by="tamiyo", churn=-0.25,
                 churn_loss=0.0625, contribution=0.0125, seed_params=2352),
    t.RollbackEvent(epoch=7, reason="non-finite loss (nan)", restored_epoch=6),
    t.EpochEvent(epoch=7, train_loss=1e9, val_loss=0.5, val_metric=1.0, params_host=1, params_active=0,
                 params_fossilized=1234),
]


def test_the_sample_covers_every_event_type():
    union = typing.get_args(t.TelemetryEvent)
    assert {type(e) for e in EVENTS} == set(union)


def _same(actual, expected) -> bool:
    if expected is None:
        return actual is None or (isinstance(actual, float) and math.isnan(actual))
    if isinstance(expected, float):
        return math.isclose(float(actual), expected, rel_tol=0, abs_tol=0)
    return actual == expected


def test_parquet_round_trips_every_event_type(tmp_path):
    path = tmp_path / "telemetry" / "run.parquet"
    hub = TelemetryHub([ParquetBackend(path)], arm="heuristic", seed=3)
    for e in EVENTS:
        hub(e)
    assert not path.exists(), "rows are buffered until flush_every or close"
    hub.close()
    df = read_events(path)
    assert len(df) == len(EVENTS), "one row per event"
    assert (df["run_arm"] == "heuristic").all() and (df["run_seed"] == "3").all()
    for i, event in enumerate(EVENTS):
        row = df.iloc[i]
        expected = event.model_dump(mode="json")
        assert row["kind"] == event.kind and int(row["epoch"]) == event.epoch
        for field, value in expected.items():
            if field in ("kind", "epoch"):
                continue
            assert field in df.columns, f"{event.kind}.{field} missing"
            assert _same(row[field], value), f"row {i} ({event.kind}).{field}: {row[field]!r} ≠ {value!r}"
        if "slot" not in expected:
            assert row["slot"] is None or pd.isna(row["slot"])
        # reconstruct the event from its row: the typed model accepts it back
        rebuilt = {f: row[f] for f in expected if f not in ("kind", "epoch")}
        rebuilt = {f: (None if (isinstance(v, float) and math.isnan(v)) else v) for f, v in rebuilt.items()}
        for f, v in rebuilt.items():
            if isinstance(expected[f], bool):
                rebuilt[f] = bool(v)
            elif isinstance(expected[f], int):
                rebuilt[f] = int(v)
        assert type(event)(epoch=int(row["epoch"]), **rebuilt) == event


def test_parquet_flushes_periodically_and_atomically(tmp_path):
    path = tmp_path / "run.parquet"
    backend = ParquetBackend(path, flush_every=4)
    hub = TelemetryHub([backend], arm="a")
    for e in EVENTS[:5]:
        hub(e)
    assert len(read_events(path)) == 4, "a crash now loses at most the rows since the last flush"
    assert not path.with_suffix(".parquet.tmp").exists()
    hub.close()
    assert len(read_events(path)) == 5


def test_empty_parquet_backend_writes_nothing(tmp_path):
    backend = ParquetBackend(tmp_path / "run.parquet")
    backend.close()
    assert not (tmp_path / "run.parquet").exists()


def test_hub_counts_and_fans_out_to_every_backend():
    class Keep:
        def __init__(self):
            self.got, self.closed = [], False

        def write(self, event, run):
            self.got.append((event, dict(run)))

        def close(self):
            self.closed = True

    a, b = Keep(), Keep()
    hub = TelemetryHub([a, b], arm="x", seed=1)
    for e in EVENTS:
        hub(e)
    hub.close()
    assert [e for e, _ in a.got] == EVENTS == [e for e, _ in b.got]
    assert all(run == {"arm": "x", "seed": 1} for _, run in a.got)
    assert a.closed and b.closed
    assert hub.counts == {"epoch": 2, "stage_change": 2, "gate": 2, "germinate": 1, "cull": 1, "fossilize": 1, "audit": 2,
                          "rollback": 1}


def test_console_prints_one_line_per_epoch_event():
    stream = io.StringIO()
    hub = TelemetryHub([ConsoleBackend(stream, lifecycle=False)], arm="static", seed=0)
    for e in EVENTS:
        hub(e)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert all(line.startswith("[arm=static seed=0] epoch") for line in lines)
    assert "0.3750" in lines[0] and "7,018" in lines[0]


def test_console_lifecycle_lines():
    stream = io.StringIO()
    hub = TelemetryHub([ConsoleBackend(stream)], arm="h", seed=2)
    for e in EVENTS:
        hub(e)
    lines = stream.getvalue().splitlines()
    assert sum(" epoch " in line for line in lines) == 2
    kinds = [line.split()[2] for line in lines if " epoch " not in line]
    assert kinds == ["germinate", "cull", "fossilize", "audit", "audit", "rollback"], "stage changes and gates stay quiet"


def test_tensorboard_writes_an_event_file(tmp_path):
    logdir = tmp_path / "tb"
    hub = TelemetryHub([TensorBoardBackend(logdir)], arm="a")
    for e in EVENTS:
        hub(e)
    hub.close()
    files = list(logdir.rglob("events.out.tfevents*"))
    assert files and all(f.stat().st_size > 0 for f in files)
    scalars: dict[str, list[tuple[int, float]]] = {}
    texts = []
    for f in files:
        for ev in _read_tfrecords(f):
            for v in ev.summary.value:
                if v.HasField("simple_value"):
                    scalars.setdefault(v.tag, []).append((ev.step, v.simple_value))
                else:
                    texts.append(v.tag)
    assert scalars[t.VAL_METRIC] == [(1, 0.375), (7, 1.0)]
    assert scalars[t.PARAMS_FOSSILIZED] == [(1, 0.0), (7, 1234.0)]
    assert {t.TRAIN_LOSS, t.VAL_LOSS, t.PARAMS_HOST, t.PARAMS_ACTIVE} <= set(scalars)
    assert any("germinate" in tag for tag in texts) and any("rollback" in tag for tag in texts)


def _read_tfrecords(path: Path):
    """Parse a TensorBoard event file (TFRecord framing: u64 length, u32 crc, data, u32 crc) with tensorboardX's protos."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    data = path.read_bytes()
    pos = 0
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos:pos + 8])
        pos += 12
        yield Event.FromString(data[pos:pos + length])
        pos += length + 4


# ------------------------------------------------------------------------------------------------ real run → plot
def _short_run(path: Path, epochs: int = 4) -> TelemetryHub:
    world = tiny_world(trainer={"epochs": epochs, "batch_size": 64, "max_batches_per_epoch": 2})
    run = build_run(world, build_world_task(world, torch.device("cpu")), seed=0, device=torch.device("cpu"))
    hub = TelemetryHub([ParquetBackend(path)], arm="schedule", seed=0)
    run.listen(hub)
    run_training(run, ScheduleTamiyo(0, "block3", "conv_light", 3))
    hub.close()
    return hub


@pytest.fixture(scope="module")
def run_telemetry(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("run") / "schedule-seed0.parquet"
    _short_run(path)
    return path


def test_real_run_telemetry_has_the_expected_events(run_telemetry):
    df = read_events(run_telemetry)
    epochs = df[df["kind"] == "epoch"]
    assert epochs["epoch"].tolist() == [1, 2, 3, 4]
    assert epochs["val_metric"].between(0, 1).all()
    changes = df[df["kind"] == "stage_change"]
    assert changes["to_stage"].tolist() == ["GERMINATED", "TRAINING", "BLENDING"]
    assert set(changes["slot"]) == {"block3"}
    assert (df[df["kind"] == "germinate"]["blueprint"] == "conv_light").all()


def test_plot_run_turns_real_telemetry_into_a_png(run_telemetry, tmp_path):
    from esper.nissa import plot as plot_run

    out = tmp_path / "plots" / "lifecycle.png"
    plot_run.plot_lifecycle(run_telemetry, out)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    spans = plot_run._spans(read_events(run_telemetry), 4)
    assert [s[0] for s in spans["block3"]] == ["GERMINATED", "TRAINING", "BLENDING"]
    assert spans["block3"][-1][2] == 4.0, "the last stage runs to the last epoch"


def test_plot_run_cli(run_telemetry, tmp_path):
    out = tmp_path / "cli.png"
    proc = subprocess.run([sys.executable, str(PLOT_RUN), str(run_telemetry), "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:4] == b"\x89PNG"
    missing = subprocess.run([sys.executable, str(PLOT_RUN), str(tmp_path / "nope.parquet")],
                             capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert missing.returncode != 0 and "not found" in missing.stderr


def test_plot_run_handles_rollbacks_and_culls(tmp_path):
    path = tmp_path / "synthetic.parquet"
    hub = TelemetryHub([ParquetBackend(path)], arm="x", seed=0)
    for e in EVENTS:
        hub(e)
    hub.close()
    out = tmp_path / "x.png"
    from esper.nissa.plot import plot_lifecycle

    plot_lifecycle(path, out)
    assert out.read_bytes()[:4] == b"\x89PNG"
