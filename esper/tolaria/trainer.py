"""The Tolaria epoch loop over a MorphogeneticModel: host and per-seed optimisers, evaluation."""

from __future__ import annotations

import itertools
import math
from typing import Callable, Iterable, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from esper.kasmina import MorphogeneticModel
from esper.leyline import FOSSIL_STAGES, LIVE_STAGES
from esper.leyline.base import EsperModel
from esper.tolaria.flops import host_epoch_flops, seeds_train_flops
from esper.tolaria.task import Task


class TrainerConfig(EsperModel):
    """Optimisation settings shared by every arm of an experiment (equal budgets)."""

    epochs: int = Field(10, ge=1)
    """Epochs per run (one controller decision per epoch)."""
    batch_size: int = Field(128, ge=1)
    """Mini-batch size."""
    optimizer: Literal["sgd", "adamw"] = "sgd"
    """The host's optimiser (fossilized seeds join it): SGD with Nesterov momentum (CNNs), or AdamW with betas
    (0.9, 0.99) (transformers, as nanoGPT trains them)."""
    lr: float = Field(0.05, gt=0)
    """Peak learning rate of the host's optimiser."""
    momentum: float = Field(0.9, ge=0, lt=1)
    """SGD momentum (unused by AdamW)."""
    weight_decay: float = Field(5e-4, ge=0)
    """Weight decay of the host's optimiser (host and fossilized seeds)."""
    seed_lr: float = Field(0.01, gt=0)
    """Peak learning rate of each live seed's own Adam optimiser."""
    schedule: Literal["cosine", "constant"] = "cosine"
    """LR schedule over `epochs` (applied identically to host and seeds)."""
    augment: bool = True
    """The task's training-time augmentation (images: random crop + horizontal flip, on device); a task
    without one ignores it."""
    max_batches_per_epoch: int | None = Field(None, ge=1)
    """Cap on train batches per epoch (cheap worlds); None = the whole train set."""
    budget_flops: float | None = Field(None, gt=0)
    """Equal-compute runs: the training FLOPs a run may spend (esper/tolaria/flops.py). The run ends once they are
    spent (its last epoch stops at the batch that spends them), the LR schedule runs over them (cosine in the
    fraction spent, set every batch) instead of over `epochs`, and `epochs` only caps the decisions.
    None = equal epochs."""
    budget_host_epochs: float | None = Field(None, gt=0)
    """The same FLOPs budget in units of the bare host's training epoch: a run may spend what the host alone
    spends in this many epochs (resolved when the run starts; not with budget_flops). The RL world's
    compute-budget episodes use this: the budget follows the host and the data."""

    @model_validator(mode="after")
    def _one_budget(self) -> "TrainerConfig":
        if self.budget_flops is not None and self.budget_host_epochs is not None:
            raise ValueError("trainer.budget_flops and trainer.budget_host_epochs are two ways to set one budget: "
                             "give one")
        return self


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
        """Match optimisers to the plane after the controllers acted: a new live seed gets its own Adam;
        a culled seed's optimiser is dropped; a fossilized seed joins the host's optimiser (it is host now, and
        stays there while it withers); a culled fossil leaves it, its optimiser state with it."""
        live = {n: s.seed for n, s in self.model.slots.items() if s.seed is not None and s.stage in LIVE_STAGES}
        for name in list(self.seed_opts):
            if name not in live or self.seed_opts[name][0] is not live[name]:
                del self.seed_opts[name]
        for name, seed in live.items():
            if name not in self.seed_opts:
                self.seed_opts[name] = (seed, torch.optim.Adam(seed.parameters(), lr=self.cfg.seed_lr))
        for name in list(self.fossil_group_order):
            slot = self.model.slot(name)
            if slot.stage not in FOSSIL_STAGES or slot.seed is not self._fossil_modules[name]:
                self._drop_fossil(name)
        for name, slot in self.model.slots.items():
            if slot.stage in FOSSIL_STAGES and self._fossil_modules.get(name) is not slot.seed:
                self.host_opt.add_param_group({"params": list(slot.seed.parameters())})
                self.fossil_group_order.append(name)
                self._fossil_modules[name] = slot.seed

    def _drop_fossil(self, name: str) -> None:
        """Remove a culled fossil's parameter group (group 0 is the host; fossils follow in join order) and its
        optimiser state (momentum, Adam moments): nothing of it is kept alive or stepped any more."""
        group = self.host_opt.param_groups.pop(1 + self.fossil_group_order.index(name))
        for param in group["params"]:
            self.host_opt.state.pop(param, None)
        self.fossil_group_order.remove(name)
        del self._fossil_modules[name]

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

    # ------------------------------------------------------------------ the epoch loop
    def train_epoch(self) -> float:
        """One epoch (or max_batches_per_epoch batches) on this trainer's own loader; returns the mean train loss."""
        epoch = self.open_epoch()
        train_on_stream([epoch], self.train_loader)
        return epoch.close()

    def open_epoch(self) -> Epoch:
        """Start an epoch, to be fed batch by batch (train_on_stream: this trainer's loader or a shared one)."""
        return Epoch(self)

    def _record_grad_norms(self) -> None:
        for name in self.seed_opts:
            slot = self.model.slot(name)
            slot.record(grad_norm=slot.seed_grad_norm())

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device


class Epoch:
    """One epoch of a Trainer: open until it has taken max_batches_per_epoch batches or (equal compute) spent the
    trainer's budget. Batches come from outside, so one data stream can feed many trainers' epochs at once.
    Part of the Trainer (it keeps the trainer's per-epoch FLOPs counters, which `exhausted` reads mid-epoch)."""

    def __init__(self, trainer: Trainer) -> None:
        """Optimisers matched to the plane, learning rates for this epoch, train mode."""
        t = self.trainer = trainer
        t.sync_optimizers()
        t._set_lrs()
        t.model.train()
        t._epoch_seed_flops, t._epoch_samples = seeds_train_flops(t.model), 0  # stages are fixed in an epoch
        self.opts = [t.host_opt] + [opt for _, opt in t.seed_opts.values()]
        self.losses: list[torch.Tensor] = []  # detached, on the device: no host sync per batch

    @property
    def open(self) -> bool:
        """Takes another batch: under max_batches_per_epoch and, in an equal-compute run, budget left."""
        cap = self.trainer.cfg.max_batches_per_epoch
        return (cap is None or len(self.losses) < cap) and not self.trainer.exhausted

    def train(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One optimiser step on (x, y)."""
        t = self.trainer
        if t.budget is not None:
            t._set_lrs()  # the schedule follows the FLOPs spent, batch by batch
        t._epoch_samples += x.shape[0]
        for opt in self.opts:
            opt.zero_grad(set_to_none=True)
        loss = t.loss_fn(t.model(x), y)
        isolation = t.model.pop_isolation_loss()
        (loss if isolation is None else loss + isolation).backward()
        for opt in self.opts:
            opt.step()
        self.losses.append(loss.detach())

    def close(self) -> float:
        """Record seed gradient norms, book the epoch's FLOPs, advance the trainer's epoch; returns the mean loss."""
        t = self.trainer
        total = torch.zeros((), device=t._device())
        for loss in self.losses:  # sequential sum: the same float result however the epoch was fed
            total += loss
        t._record_grad_norms()
        t.train_flops += t._epoch_samples * (t.host_flops + t._epoch_seed_flops)
        t._epoch_samples = 0  # booked: flops_spent() must not count them twice
        t.epoch += 1
        return float(total) / max(len(self.losses), 1)


Wait = Callable[[], object]
"""Waits until the epochs a dealer started on a batch have trained on it."""


def deal_in_turn(epochs: list[Epoch], x: torch.Tensor, y: torch.Tensor) -> Wait:
    """Train the epochs on the batch one after another, now (nothing is left to wait for)."""
    for epoch in epochs:
        epoch.train(x, y)
    return lambda: None


def train_on_stream(epochs: list[Epoch], stream: Iterable[tuple[torch.Tensor, torch.Tensor]],
                    deal: Callable[[list[Epoch], torch.Tensor, torch.Tensor], Wait] = deal_in_turn) -> None:
    """The one epoch loop: feed `epochs` (a lone trainer's, or many trainers' sharing one data stream) the batches
    of `stream`, each drawn once, to every epoch still open, until none is (an epoch whose budget is spent stops
    taking batches, the others go on). The caller closes the epochs.

    `deal(open epochs, x, y)` starts them on a batch and returns what waits for them. The next batch is drawn
    before that wait, so a dealer training in the background (a thread pool) overlaps the two. The batches drawn
    (so the stream's RNG state) do not depend on the dealer: up to one past the batch that spends the last open
    budget, as a lone trainer's loop always drew, and none past the largest max_batches_per_epoch."""
    live = [e for e in epochs if e.open]
    caps = [e.trainer.cfg.max_batches_per_epoch for e in live]
    batches = itertools.islice(iter(stream), None if None in caps else max(caps, default=0))
    batch = next(batches, None)
    while batch is not None and live:
        wait = deal(live, *batch)
        batch = next(batches, None)
        wait()
        live = [e for e in live if e.open]
