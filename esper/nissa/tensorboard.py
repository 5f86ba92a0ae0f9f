"""Every TensorBoard event Esper writes goes through here: one scalar writer for runs, and Tune's logger for sweeps
with the same tag names, so `tensorboard --logdir runs/` puts a PPO run and a Tune trial on one chart."""

from __future__ import annotations

import math
from pathlib import Path

from ray.tune.logger import TBXLoggerCallback


class ScalarWriter:
    """TensorBoard scalars (and text) under `logdir`. NaN scalars — not reported yet — are skipped. `purge_step`:
    a resumed run drops the events of the steps it redoes."""

    def __init__(self, logdir: str | Path, purge_step: int | None = None, flush_secs: int = 10) -> None:
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(str(logdir), purge_step=purge_step, flush_secs=flush_secs)

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            if not math.isnan(value):
                self.writer.add_scalar(tag, value, step)

    def text(self, tag: str, value: str, step: int) -> None:
        self.writer.add_text(tag, value, step)

    def close(self) -> None:
        self.writer.close()


class DashboardLogger(TBXLoggerCallback):
    """Tune's TensorBoard logger writing the tags PPO runs write: Tune prefixes every tag with 'ray/tune/', so
    without this a sweep's `train/final_metric` and a PPO run's never share a chart in `tensorboard --logdir runs`."""

    def __init__(self) -> None:
        super().__init__()
        self._writer_cls = self._summary_writer_cls
        self._summary_writer_cls = self._untagged_writer

    def _untagged_writer(self, *args, **kwargs) -> "_Untagged":
        return _Untagged(self._writer_cls(*args, **kwargs))


class _Untagged:
    """A SummaryWriter whose scalar tags lose Tune's prefix."""

    PREFIX = "ray/tune/"

    def __init__(self, writer) -> None:
        self._writer = writer

    def add_scalar(self, tag: str, *args, **kwargs):
        return self._writer.add_scalar(tag.removeprefix(self.PREFIX), *args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._writer, name)
