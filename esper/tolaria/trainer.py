"""The Tolaria epoch loop over a MorphogeneticModel: host and per-seed optimisers, evaluation."""

from __future__ import annotations

import itertools
import math
from typing import Iterable, Iterator

import torch
from torch import nn

from esper.kasmina import MorphogeneticModel
from esper.leyline import LIVE_STAGES, Stage
from esper.leyline.experiment import TrainerConfig
from esper.tolaria.flops import host_epoch_flops, seeds_train_flops
from esper.tolaria.task import Task


def pick_device(preference: str = "auto") -> torch.device:
    """CUDA when available (inside Ray actors: the GPU Ray assigned), else CPU."""
    if preference == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    return torch.device(preference)


class Trainer:
    """Trains one MorphogeneticModel epoch by epoch; the controller acts between epochs."""

    def __init__(self, model: MorphogeneticModel, task: Task, cfg: TrainerConfig, seed: int = 0) -> None:
        """`seed` fixes the order (and augmentation) of the training batches."""
        self.model, self.cfg, self.epoch = model, cfg, 0
        self.train_loader: Iterable | None = task.train_stream(cfg.batch_size, cfg.augment, seed)
        self.loss_fn = task.loss
        self.train_flops = 0.0
        """Training FLOPs spent so far (forward + backward of the host and every live seed, esper/tolaria/flops.py)."""
        self.host_flops, self.host_epoch_flops = host_epoch_flops(model, task, cfg.batch_size, cfg.max_batches_per_epoch)
        """Per-sample training FLOPs of the host alone, and what one epoch of it costs (the unit of
        `budget_host_epochs`)."""
        self.budget: float | None = cfg.budget_flops if cfg.budget_host_epochs is None else \
            cfg.budget_host_epochs * self.host_epoch_flops
        """The training FLOPs this run may spend (None: equal epochs)."""
        self.compute_budget = self.budget if self.budget is not None else self.host_epoch_flops * cfg.epochs
        """The reference compute of the run: its budget, or in an equal-epoch run what the bare host spends in
        all `epochs` (the budget-spent feature and the compute rent are fractions of it)."""
        self._epoch_seed_flops, self._epoch_samples = 0.0, 0
        self.seed_opts: dict[str, tuple[nn.Module, torch.optim.Optimizer]] = {}
        self.rebuild_host_optimizer([], None)

    # ------------------------------------------------------------------ optimisers
    def sync_optimizers(self) -> None:
        """Match optimisers to the plane after the controller acted: a new live seed gets its own Adam;
        a culled seed's optimiser is dropped; a fossilized seed joins the host's optimiser (it is host now)."""
        live = {n: s.seed for n, s in self.model.slots.items() if s.seed is not None and s.stage in LIVE_STAGES}
        for name in list(self.seed_opts):
            if name not in live or self.seed_opts[name][0] is not live[name]:
                del self.seed_opts[name]
        for name, seed in live.items():
            if name not in self.seed_opts:
                self.seed_opts[name] = (seed, torch.optim.Adam(seed.parameters(), lr=self.cfg.seed_lr))
        for name, slot in self.model.slots.items():
            if slot.stage is Stage.FOSSILIZED and self._fossil_modules.get(name) is not slot.seed:
                self.host_opt.add_param_group({"params": list(slot.seed.parameters())})
                self.fossil_group_order.append(name)
                self._fossil_modules[name] = slot.seed

    def rebuild_host_optimizer(self, fossil_order: list[str], state: dict | None) -> None:
        """A fresh host optimiser (trainer.optimizer) whose extra param groups are the fossils in `fossil_order`
        (Governor restores)."""
        cfg, params = self.cfg, self.model.host.parameters()
        if cfg.optimizer == "adamw":
            self.host_opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
        else:
            self.host_opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                            nesterov=cfg.momentum > 0)
        self.fossil_group_order: list[str] = []
        self._fossil_modules: dict[str, nn.Module] = {}
        for name in fossil_order:
            seed = self.model.slot(name).seed
            self.host_opt.add_param_group({"params": list(seed.parameters())})
            self.fossil_group_order.append(name)
            self._fossil_modules[name] = seed
        if state is not None:
            self.host_opt.load_state_dict(state)

    def _lr_factor(self) -> float:
        if self.cfg.schedule == "constant":
            return 1.0
        if self.budget is not None:  # equal compute: the schedule runs over the FLOPs budget
            return 0.5 * (1.0 + math.cos(math.pi * min(self.flops_spent() / self.budget, 1.0)))
        return 0.5 * (1.0 + math.cos(math.pi * self.epoch / self.cfg.epochs))

    def flops_spent(self) -> float:
        """Training FLOPs spent so far, the current epoch's batches included."""
        return self.train_flops + self._epoch_samples * (self.host_flops + self._epoch_seed_flops)

    @property
    def exhausted(self) -> bool:
        """True once an equal-compute run has spent its budget (never for equal-epoch runs)."""
        return self.budget is not None and self.flops_spent() >= self.budget

    def _set_lrs(self) -> None:
        f = self._lr_factor()
        for g in self.host_opt.param_groups:
            g["lr"] = self.cfg.lr * f
        for _, opt in self.seed_opts.values():
            for g in opt.param_groups:
                g["lr"] = self.cfg.seed_lr * f

    # ------------------------------------------------------------------ loops
    def train_epoch(self) -> float:
        """One epoch (or max_batches_per_epoch batches) on this trainer's own loader; returns the mean train loss."""
        opts = self.start_epoch()
        losses = []
        for x, y in self.epoch_batches():
            if self.exhausted:  # equal compute: the budget is spent mid-epoch
                break
            losses.append(self.train_batch(opts, x, y))
        return self.end_epoch(losses)

    def epoch_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This epoch's batches: the loader cut at max_batches_per_epoch (nothing beyond is drawn)."""
        return itertools.islice(iter(self.train_loader), self.cfg.max_batches_per_epoch)

    # The three steps of an epoch, separate so a vectorised env can feed many trainers the same shared batches.
    def start_epoch(self) -> list[torch.optim.Optimizer]:
        """Optimisers matched to the plane, learning rates for this epoch, train mode; returns the optimisers."""
        self.sync_optimizers()
        self._set_lrs()
        self.model.train()
        self._epoch_seed_flops, self._epoch_samples = seeds_train_flops(self.model), 0  # stages are fixed in an epoch
        return [self.host_opt] + [opt for _, opt in self.seed_opts.values()]

    def train_batch(self, opts: list[torch.optim.Optimizer], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimiser step on (x, y); returns the detached loss (no host sync)."""
        if self.budget is not None:
            self._set_lrs()  # the schedule follows the FLOPs spent, batch by batch
        self._epoch_samples += x.shape[0]
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model(x), y)
        isolation = self.model.pop_isolation_loss()
        (loss if isolation is None else loss + isolation).backward()
        for opt in opts:
            opt.step()
        return loss.detach()

    def end_epoch(self, losses: list[torch.Tensor]) -> float:
        """Record seed gradient norms, advance the epoch; returns the mean of `losses`."""
        total = torch.zeros((), device=self._device())
        for loss in losses:  # sequential sum: the same float result however the epoch was driven
            total += loss
        self._record_grad_norms()
        self.train_flops += self._epoch_samples * (self.host_flops + self._epoch_seed_flops)
        self._epoch_samples = 0  # booked: flops_spent() must not count them twice
        self.epoch += 1
        return float(total) / max(len(losses), 1)

    def _record_grad_norms(self) -> None:
        for name in self.seed_opts:
            slot = self.model.slot(name)
            slot.record(grad_norm=slot.seed_grad_norm())

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device
