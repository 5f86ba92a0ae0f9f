"""Grown models: save/load through the architecture manifest, and in-memory snapshot/restore."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from _support import SEED_STAGES, advance_to, images, labels, perturb, tiny_model
from esper.kasmina import MorphogeneticModel, read_manifest
from esper.kasmina.hosts import CNNHost, build_host
from esper.kasmina.config import GateConfig, KasminaConfig
from esper.kasmina.hosts import CNNHostConfig
from esper.leyline import Stage

# Four blocks so one model can hold TRAINING, BLENDING (mid-ramp), FOSSILIZED and EMBARGOED slots at once.
HOST = CNNHostConfig(preset="custom", widths=(8, 16, 16, 32))
GATES = GateConfig(max_seed_param_ratio=2.0, min_training_epochs=0, min_holding_epochs=0, embargo_epochs=5)
CONFIG = KasminaConfig(gate_profile="custom", gates=GATES)


def _sgd_steps(model: MorphogeneticModel, steps: int = 2, seed: int = 0) -> None:
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = images(8, seed=seed), labels(8, seed=seed)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()


def _grow(with_embargo: bool) -> MorphogeneticModel:
    model = MorphogeneticModel(CNNHost(HOST), CONFIG)
    model.germinate("block3", "conv_light", tempo=2, curve="cosine")
    advance_to(model, "block3", Stage.FOSSILIZED)
    model.slot("block3").record(contribution=0.031)
    if with_embargo:
        model.germinate("block4", "bottleneck", tempo=3)
        advance_to(model, "block4", Stage.TRAINING)
        model.cull("block4")
        model.step_epoch()  # CULLED → EMBARGOED
        assert model.slot("block4").stage is Stage.EMBARGOED
    else:
        model.germinate("block4", "attention", tempo=1)
        advance_to(model, "block4", Stage.HOLDING)
    model.germinate("block2", "depthwise", tempo=4, curve="sigmoid")
    advance_to(model, "block2", Stage.BLENDING)
    model.step_epoch()
    model.step_epoch()
    assert 0.0 < model.slot("block2").alpha < 1.0
    model.germinate("block1", "norm", tempo=3)
    advance_to(model, "block1", Stage.TRAINING)
    model.slot("block1").record(grad_norm=0.25)
    _sgd_steps(model)
    # The zero-initialised last layers have moved: the weights are non-trivial.
    assert torch.count_nonzero(model.slot("block3").seed[-1].weight) > 0
    return model


def _assert_same_weights(a: MorphogeneticModel, b: MorphogeneticModel) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _roundtrip(model: MorphogeneticModel, tmp_path) -> MorphogeneticModel:
    path = tmp_path / "grown" / "model.pt"
    model.save(path)
    assert path.exists() and not list(path.parent.glob(".*.tmp")), "atomic save leaves no temp file"
    manifest = read_manifest(path)
    assert manifest == model.manifest()
    return MorphogeneticModel.load(path, build_host(manifest.host))


def _assert_identical(model: MorphogeneticModel, loaded: MorphogeneticModel) -> None:
    assert loaded.manifest() == model.manifest()
    assert loaded.config == model.config
    assert loaded.param_counts() == model.param_counts()
    assert loaded.action_spec == model.action_spec
    _assert_same_weights(model, loaded)
    model.eval()
    loaded.eval()
    x = images(4, seed=9)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    for name in model.action_spec.slots:
        a, b = model.slot(name), loaded.slot(name)
        assert (a.stage, a.blueprint, a.alpha, a.tempo, a.curve) == (b.stage, b.blueprint, b.alpha, b.tempo, b.curve)
        assert (a.seed is None) == (b.seed is None)


def test_save_load_roundtrip_of_a_grown_model(tmp_path):
    model = _grow(with_embargo=False)
    stages = [model.slot(n).stage for n in model.action_spec.slots]
    assert stages == [Stage.TRAINING, Stage.BLENDING, Stage.FOSSILIZED, Stage.HOLDING]
    loaded = _roundtrip(model, tmp_path)
    _assert_identical(model, loaded)
    # The loaded model carries on where the original was: the blend keeps ramping identically.
    model.step_epoch()
    loaded.step_epoch()
    assert loaded.manifest() == model.manifest()


def test_save_load_roundtrip_with_an_embargoed_slot(tmp_path):
    model = _grow(with_embargo=True)
    stages = [model.slot(n).stage for n in model.action_spec.slots]
    assert stages == [Stage.TRAINING, Stage.BLENDING, Stage.FOSSILIZED, Stage.EMBARGOED]
    loaded = _roundtrip(model, tmp_path)
    _assert_identical(model, loaded)
    assert loaded.slot("block4").embargo_remaining == model.slot("block4").embargo_remaining > 0


def test_saved_file_is_plain_tensors_and_containers(tmp_path):
    model = _grow(with_embargo=False)
    path = tmp_path / "m.pt"
    model.save(path)
    payload = torch.load(path, weights_only=True)
    assert isinstance(payload, dict)
    assert {"format", "manifest", "kasmina_config", "state_dict"} <= set(payload)
    assert isinstance(payload["manifest"], dict) and isinstance(payload["kasmina_config"], dict)
    assert all(isinstance(v, torch.Tensor) for v in payload["state_dict"].values())
    assert any(k.startswith("slots.block3.seed.") for k in payload["state_dict"])


def test_manifest_host_spec_rebuilds_the_same_host():
    host = CNNHost(HOST)
    rebuilt = build_host(MorphogeneticModel(host).manifest().host)
    assert isinstance(rebuilt, CNNHost) and rebuilt.config == host.config
    assert [p for p in rebuilt.injection_points()] == [p for p in host.injection_points()]
    with pytest.raises(ValueError, match="unknown host"):
        build_host({"name": "warp_drive"})


def test_loading_something_else_is_a_value_error(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save(CNNHost(HOST).state_dict(), plain)
    other = tmp_path / "other.pt"
    torch.save({"format": "esper.agent/1", "manifest": {}}, other)
    for path in (plain, other):
        with pytest.raises(ValueError, match="not an Esper grown model"):
            MorphogeneticModel.load(path, CNNHost(HOST))


def test_read_manifest_of_something_else_is_a_value_error(tmp_path):
    """read_manifest is the first call of the documented load path (build the host from its spec, then load),
    so a wrong file must fail there with the same clear ValueError as `load`."""
    plain = tmp_path / "plain.pt"
    torch.save(CNNHost(HOST).state_dict(), plain)
    with pytest.raises(ValueError, match="not an Esper grown model"):
        read_manifest(plain)


def test_load_rejects_a_mismatched_host(tmp_path):
    model = _grow(with_embargo=False)
    path = tmp_path / "m.pt"
    model.save(path)
    with pytest.raises(ValueError):  # three slots where the manifest lists four
        MorphogeneticModel.load(path, CNNHost(CNNHostConfig(preset="tiny")))


def test_load_manifest_rejects_an_unknown_format_version():
    model = _grow(with_embargo=False)
    bad = model.manifest().model_copy(update={"format_version": 999})
    with pytest.raises(ValueError, match="999"):
        model.load_manifest(bad)


# ------------------------------------------------------------------------------------------ snapshot / restore


def test_snapshot_restore_is_exact_after_growth_culls_and_training():
    model = _grow(with_embargo=False)
    model.eval()
    x = images(4, seed=4)
    with torch.no_grad():
        ref_out = model(x)
    ref_state = {k: v.clone() for k, v in model.state_dict().items()}
    ref_manifest = model.manifest()
    snap = model.snapshot()

    # Diverge: cull a live seed, fossilize another, germinate into … no free slot, so cull+embargo, train.
    model.cull("block1")
    model.advance("block4")  # HOLDING → FOSSILIZED
    for _ in range(3):
        model.step_epoch()
    model.slot("block3").record(contribution=-0.5)
    _sgd_steps(model, steps=3, seed=1)
    perturb(model.slot("block2").seed, scale=0.2)
    assert model.manifest() != ref_manifest
    assert any(not torch.equal(v, model.state_dict()[k]) for k, v in ref_state.items() if k in model.state_dict())
    # The snapshot was a deep copy: training did not leak into it.
    for k, v in snap["state_dict"].items():
        assert torch.equal(v, ref_state[k]), k

    model.restore(snap)
    assert model.manifest() == ref_manifest
    state = model.state_dict()
    assert state.keys() == ref_state.keys()
    for k in ref_state:
        assert torch.equal(state[k], ref_state[k]), k
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), ref_out)
    for name in model.action_spec.slots:
        slot = model.slot(name)
        assert (slot.seed is not None) == (slot.stage in SEED_STAGES)


def test_restore_drops_seeds_germinated_after_the_snapshot():
    model = MorphogeneticModel(CNNHost(HOST), CONFIG)
    snap = model.snapshot()
    empty_params = sum(p.numel() for p in model.parameters())
    model.germinate("block2", "conv_heavy", tempo=2)
    advance_to(model, "block2", Stage.BLENDING)
    assert sum(p.numel() for p in model.parameters()) > empty_params
    model.restore(snap)
    assert sum(p.numel() for p in model.parameters()) == empty_params
    assert model.slot("block2").stage is Stage.DORMANT and model.slot("block2").seed is None
    model.germinate("block2", "norm", tempo=3)  # and the slot is usable again


def test_restore_over_a_culled_slot_and_of_a_snapshot_holding_one():
    """Rollback must work whatever stage the slots are in, including the embargo stages."""
    model = MorphogeneticModel(CNNHost(HOST), CONFIG)
    model.germinate("block1", "conv_light", tempo=2)
    advance_to(model, "block1", Stage.TRAINING)
    snap = model.snapshot()
    model.cull("block1")
    model.restore(snap)  # the slot comes back from CULLED
    assert model.slot("block1").stage is Stage.TRAINING and model.slot("block1").seed is not None

    model.cull("block1")
    model.step_epoch()
    assert model.slot("block1").stage is Stage.EMBARGOED
    embargoed = model.snapshot()
    model.germinate("block2", "norm", tempo=2)
    model.restore(embargoed)
    assert model.manifest() == embargoed["manifest"]
    assert model.slot("block1").stage is Stage.EMBARGOED and model.slot("block1").seed is None
    assert model.slot("block2").seed is None


def test_slot_state_is_the_one_description_reports_and_manifests_derive_from():
    """A new slot fact is one SlotState field: reports carry every state field (plus the gate verdict) and the
    stored manifest is a subset of them, so neither can drift into a parallel copy."""
    import dataclasses

    from esper.leyline import SlotReport, SlotState, SlotManifest

    state = [f.name for f in dataclasses.fields(SlotState)]
    assert [f.name for f in dataclasses.fields(SlotReport)] == state + ["gate_open"]
    assert set(SlotManifest.model_fields) <= set(state)
    model = tiny_model()
    model.germinate("block2", "conv_light", tempo=3, curve="linear")
    slot = model.slot("block2")
    report, stored = slot.report(), slot.manifest()
    assert {k: getattr(report, k) for k in state} == dataclasses.asdict(slot.state)
    assert stored.to_state(seed_params=slot.seed_params, sanity_ok=True) == slot.state
    with pytest.raises(AttributeError):
        slot.alpha = 0.5  # a slot changes only through its commands
