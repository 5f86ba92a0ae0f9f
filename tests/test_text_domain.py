"""The text domain: character task (windows, split, metric), transformer host through the plane, token seeds."""

from __future__ import annotations

import math

import pytest
import torch

from esper.kasmina import MorphogeneticModel
from esper.kasmina.slot import IllegalCommandError
from esper.kasmina.hosts import build_host
from esper.kasmina.config import KasminaConfig
from esper.leyline import FactoredAction, Op, Stage
from esper.kasmina.hosts import TransformerHostConfig
from esper.tolaria.text_task import TextDataConfig
from esper.tolaria.trainer import TrainerConfig
from esper.world import WorldConfig
from esper.tolaria.builder import build_run, build_world_task
from esper.tolaria.data import DataError
from esper.tolaria.run import run_training
from esper.tamiyo import ScheduleTamiyo, WaitTamiyo

TEXT = "".join(f"line {i % 7}: the quick brown fox jumps over the lazy dog.\n" for i in range(60))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def _world(corpus, **trainer) -> WorldConfig:
    return WorldConfig.model_validate({
        "data": {"task": "char_lm", "source": str(corpus), "block_size": 16, "val_windows": 8},
        "host": {"name": "transformer", "preset": "custom", "n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 16,
                 "vocab_size": len(set(TEXT))},
        "kasmina": {"gate_profile": "permissive", "lifecycle": "graft"},
        "trainer": {"epochs": 3, "batch_size": 8, "max_batches_per_epoch": 5, "optimizer": "adamw", "lr": 3e-3,
                    "weight_decay": 0.0, "augment": False, **trainer},
        "val_images": None,
    })


def test_the_text_task_splits_like_nanogpt_and_judges_on_fixed_windows(corpus):
    task = build_world_task(_world(corpus), torch.device("cpu"))
    assert task.output_size == len(set(TEXT)) and task.chance_loss == pytest.approx(math.log(len(set(TEXT))))
    assert len(task.train_ids) == int(len(TEXT) * 0.9) and task.decode(task.val_ids[:5]) == TEXT[int(len(TEXT) * 0.9):][:5]
    (x, y), = task.val_batches
    assert x.shape == y.shape == (8, 16) and torch.equal(x[:, 1:], y[:, :-1]), "targets are the next characters"
    a, b = list(task.train_stream(8, False, seed=1)), list(task.train_stream(8, False, seed=1))
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a, b)), "a seed fixes the windows"
    stream = task.train_stream(8, False, seed=1)
    assert not torch.equal(next(iter(stream))[0], next(iter(stream))[0]), "each pass draws new windows"


def test_bad_text_is_a_data_error(tmp_path):
    from esper.tolaria.text_task import read_text

    with pytest.raises(DataError, match="not found"):
        read_text(tmp_path / "missing.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(DataError, match="not UTF-8"):
        read_text(tmp_path / "bin.txt")


def test_a_transformer_grows_token_seeds_without_changing_its_output(corpus):
    task = build_world_task(_world(corpus), torch.device("cpu"))
    host = build_host(TransformerHostConfig(preset="custom", n_layer=2, n_head=2, n_embd=16, block_size=16,
                                            vocab_size=task.output_size))
    model = MorphogeneticModel(host, KasminaConfig(gate_profile="permissive", lifecycle="graft")).eval()
    x, _ = task.val_batches[0]
    before = model(x)
    spec = model.action_spec
    assert set(spec.blueprints) == {"token_mlp", "attention_head", "lora", "block", "token_norm", "block_copy"}
    for slot, bp in (("block1", "attention_head"), ("block2", "block")):
        model.apply(FactoredAction(Op.GERMINATE, spec.slots.index(slot), spec.blueprints.index(bp), 0))
        assert model.slot(slot).stage is Stage.FOSSILIZED
    assert torch.allclose(model(x), before, atol=0, rtol=0), "grafts are function-preserving"


def test_block_copy_stacks_a_copy_of_the_host_block_and_a_restore_keeps_it(corpus):
    """Depth stacking: a `block_copy` seed grafted after block 1 makes the model compute blocks [1, 1, 2] exactly —
    a copy, not a shared module — and a snapshot restore rebuilds it with the host block's structure (2 heads)."""
    task = build_world_task(_world(corpus), torch.device("cpu"))
    host = build_host(TransformerHostConfig(preset="custom", n_layer=2, n_head=2, n_embd=16, block_size=16,
                                            vocab_size=task.output_size))
    model = MorphogeneticModel(host, KasminaConfig(gate_profile="permissive", lifecycle="graft")).eval()
    x, _ = task.val_batches[0]
    model.germinate("block1", "block_copy", tempo=1)
    copy = model.slot("block1").seed.block
    assert copy is not host.blocks[0] and copy.attn.n_head == 2
    assert all(torch.equal(a, b) for a, b in zip(copy.parameters(), host.blocks[0].parameters()))
    with torch.no_grad():
        h = host.tok_emb(x) + host.pos_emb(torch.arange(x.shape[1]))
        stacked = host.head(host.ln_f(host.blocks[1](host.blocks[0](host.blocks[0](h)))))
        assert torch.allclose(model(x), stacked, atol=1e-6)
        snapshot, out = model.snapshot(), model(x)
        for p in model.parameters():
            p.add_(0.05)
        model.restore(snapshot)
        assert torch.equal(model(x), out)

    class NoTemplates(type(host)):
        template_at = None

    bare = MorphogeneticModel(NoTemplates(host.config), KasminaConfig(gate_profile="permissive"))
    with pytest.raises(IllegalCommandError, match="host offers none"):
        bare.germinate("block2", "block_copy")
    assert bare.slot("block2").stage is Stage.DORMANT


def test_a_text_run_learns_and_a_grown_one_books_its_seed_compute(corpus):
    world = _world(corpus)
    task = build_world_task(world, torch.device("cpu"))
    static = run_training(build_run(world, task, seed=0, device=torch.device("cpu")), WaitTamiyo())
    grown = run_training(build_run(world, task, seed=0, device=torch.device("cpu")), ScheduleTamiyo(1, "block2", "block", 3))
    assert static.metric_name == "neg_loss" and -static.val_metric < task.chance_loss - 0.3, "it learned something"
    assert static.val_loss == pytest.approx(-static.val_metric, rel=1e-5)
    assert grown.train_flops > static.train_flops and grown.params_total > static.params_total


def test_the_host_refuses_a_longer_context_and_a_bad_shape():
    import pydantic

    host = build_host(TransformerHostConfig(block_size=8, vocab_size=10))
    with pytest.raises(ValueError, match="longer than the host's block_size"):
        host(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(pydantic.ValidationError, match="multiple of host.n_head"):
        TransformerHostConfig(preset="custom", n_layer=1, n_head=3, n_embd=16)
    with pytest.raises(pydantic.ValidationError, match="set preset: custom"):
        TransformerHostConfig(preset="tiny", n_layer=3)
    assert TrainerConfig(optimizer="adamw").optimizer == "adamw" and TextDataConfig(source="x.txt").task == "char_lm"


def test_a_trained_text_model_writes_text_from_its_vocabulary_reproducibly(corpus):
    world = _world(corpus)
    task = build_world_task(world, torch.device("cpu"))
    run = build_run(world, task, seed=0, device=torch.device("cpu"))
    run_training(run, WaitTamiyo())
    state = torch.get_rng_state()
    text = task.generate(run.model, 40, seed=3)
    assert torch.equal(state, torch.get_rng_state()), "sampling draws from its own generator"
    assert len(text) == 40 and set(text) <= set(TEXT) and text == task.generate(run.model, 40, seed=3)


def test_booked_transformer_flops_match_the_counter_over_a_real_epoch(corpus):
    """The compute accounting holds for (B, T, D) points: host + a grafted block and an attention head, booked
    from per-window costs, equal torch's counter over a whole epoch (within 5 %)."""
    from torch.utils.flop_counter import FlopCounterMode

    from esper.tolaria.trainer import Trainer

    world = _world(corpus)
    task = build_world_task(world, torch.device("cpu"))
    torch.manual_seed(0)
    run = build_run(world, task, seed=0, device=torch.device("cpu"))
    spec = run.model.action_spec
    for slot, bp in (("block1", "block"), ("block2", "attention_head")):
        run.apply(FactoredAction(Op.GERMINATE, spec.slots.index(slot), spec.blueprints.index(bp), 0))
    trainer: Trainer = run.trainer
    trainer.train_epoch()
    before = trainer.train_flops
    with FlopCounterMode(display=False) as counter:
        trainer.train_epoch()
    booked, counted = trainer.train_flops - before, counter.get_total_flops()
    assert counted > 0 and booked == pytest.approx(counted, rel=0.05), (booked, counted)


def test_a_grown_transformer_saves_and_reloads_exactly(corpus, tmp_path):
    task = build_world_task(_world(corpus), torch.device("cpu"))
    config = TransformerHostConfig(preset="custom", n_layer=2, n_head=2, n_embd=16, block_size=16, vocab_size=task.output_size)
    model = MorphogeneticModel(build_host(config), KasminaConfig(gate_profile="permissive", lifecycle="graft"))
    spec = model.action_spec
    model.apply(FactoredAction(Op.GERMINATE, spec.slots.index("block2"), spec.blueprints.index("block"), 0))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))  # as if trained: the seed's output is no longer zero
    model.save(tmp_path / "grown.pt")
    from esper.kasmina.model import read_manifest

    loaded = MorphogeneticModel.load(tmp_path / "grown.pt", build_host(read_manifest(tmp_path / "grown.pt").host))
    x, _ = task.val_batches[0]
    assert torch.equal(loaded.eval()(x), model.eval()(x))
