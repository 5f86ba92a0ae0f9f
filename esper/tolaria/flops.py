"""Training-compute accounting: FLOPs per training sample of the host and of each live seed, by stage.

Costs are measured once with torch's FLOP counter (`FlopCounterMode`: matrix multiplies and convolutions, one
multiply-add = 2 FLOPs) on a small batch, per host and per (blueprint, injection point, stage kind), and
multiplied by the samples an epoch trains on. What a seed costs depends on its stage, as its forward does
(esper/kasmina/slot.py): DORMANT, GERMINATED and the embargo stages run nothing, nor does BLENDING while α is
still 0; TRAINING, BLENDING and HOLDING run the seed on a detached input (forward + the backward to its own weights); FOSSILIZED runs it inside the graph
(the backward also reaches its input, and through it the host), and so does a WITHERING fossil until its α
reaches 0 (then it runs nothing: its output is the host's).
"""

from __future__ import annotations

import copy
import functools
import itertools

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula, sdpa_backward_flop_count, sdpa_flop_count

from esper.kasmina import MorphogeneticModel, get_blueprint
from esper.kasmina.protocol import InjectionPoint
from esper.leyline import FOSSIL_STAGES, Stage


# torch's counter has no formula for the CPU flash-attention kernels, so on a CPU attention would count 0 (on the
# meta device and on GPUs it counts as the usual 4·B·H·T²·d). The same formulas, for the CPU kernels:
@register_flop_formula(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu, get_raw=True)
def _cpu_attention_flops(query, key, value, *args, out_val=None, **kwargs) -> int:
    return sdpa_flop_count(query.shape, key.shape, value.shape)


@register_flop_formula(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward, get_raw=True)
def _cpu_attention_backward_flops(grad_out, query, key, value, *args, out_val=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out.shape, query.shape, key.shape, value.shape)


DETACHED_STAGES = frozenset({Stage.TRAINING, Stage.BLENDING, Stage.HOLDING})
PROBE_BATCH = 4  # samples per measurement (BatchNorm needs more than one); costs are divided back to one sample


def _train_flops(module: nn.Module, x: Tensor, forward) -> int:
    """FLOPs of one forward + backward of `forward(module, x)` (gradients to the parameters, and to `x` if it
    requires them), without touching the module's gradients or statistics as the trainer left them."""
    was_training = module.training
    saved = [p.grad for p in module.parameters()]
    module.train()
    with FlopCounterMode(display=False) as counter:
        forward(module, x).float().pow(2).mean().backward()
    for p, g in zip(module.parameters(), saved):
        p.grad = g
    module.train(was_training)
    return int(counter.get_total_flops())


def host_train_flops(model: MorphogeneticModel, sample: Tensor) -> float:
    """Per-sample training FLOPs of the host alone (every slot left out), for an input like `sample` (1, …)."""
    host = copy.deepcopy(model.host)  # BatchNorm statistics of the real host stay untouched
    x = sample.expand(PROBE_BATCH, *sample.shape[1:]).clone()
    return _train_flops(host, x, lambda m, inp: m.forward_through(inp, lambda name, h: h)) / PROBE_BATCH


@functools.lru_cache(maxsize=None)
def seed_train_flops(blueprint: str, point: InjectionPoint, through_graph: bool) -> float:
    """Per-sample training FLOPs of a `blueprint` seed at `point`: on a detached input (isolation, blending,
    holding) or inside the graph (fossilized: its input gradient is computed too)."""
    shape = point.feature_shape(PROBE_BATCH, fallback=1)
    with torch.device("meta"):  # shapes are all the counter needs: no memory, no draw from the RNG streams
        seed = get_blueprint(blueprint).build(point.channels)
        x = torch.empty(shape, requires_grad=through_graph)
        return _train_flops(seed, x, lambda m, inp: inp + m(inp)) / PROBE_BATCH


def seeds_train_flops(model: MorphogeneticModel) -> float:
    """Per-sample training FLOPs of the model's seeds in their current stages."""
    total = 0.0
    for slot in model.slots.values():
        if slot.seed is None:
            continue
        if slot.stage in DETACHED_STAGES and not (slot.stage is Stage.BLENDING and slot.alpha == 0.0):
            total += seed_train_flops(slot.blueprint, slot.point, False)  # (at α = 0 a blending seed does not run)
        elif slot.stage in FOSSIL_STAGES and slot.alpha > 0.0:
            total += seed_train_flops(slot.blueprint, slot.point, True)
    return total


def epoch_samples(stream, max_batches: int | None) -> int:
    """Samples one epoch of `stream` (a task's training batches) trains on, cut at `max_batches`."""
    return sum(x.shape[0] for x, _ in itertools.islice(iter(stream), max_batches))


def host_epoch_flops(model: MorphogeneticModel, task, batch_size: int, max_batches: int | None) -> tuple[float, float]:
    """(per-sample, per-epoch) training FLOPs of the model's host alone on `task`: the unit of budget_host_epochs."""
    per_sample = host_train_flops(model, task.nominal_input())
    return per_sample, per_sample * epoch_samples(task.train_stream(batch_size, False, 0), max_batches)
