"""The batch-first EsperVectorEnv: same results as lone envs on the same seeds and data stream (also where compute
budgets end episodes mid-epoch), gymnasium's NEXT_STEP autoreset, thread-count independence, and RLlib stepping
it via num_envs_per_env_runner."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from esper.leyline import FactoredAction, Op
from esper.leyline.actions import ActionMasks
from esper.world import WorldConfig
from esper.simic.config import TrainTamiyoConfig
from esper.runtime.cluster import runner_placement
from esper.runtime.resources import plan_runners
from esper.simic.env import EsperEnv
from esper.simic.ppo.algo import build_ppo_config
from esper.simic.vector_env import EsperVectorEnv, make_esper_env

WORLD = {"data": {"source": "synthetic", "limit": 300, "val_fraction": 0.2},
         "trainer": {"epochs": 5, "batch_size": 16, "max_batches_per_epoch": 3}, "val_images": 48}


def _world(**trainer) -> WorldConfig:
    w = WorldConfig.model_validate(WORLD)
    return w.model_copy(update={"trainer": w.trainer.model_copy(update=trainer)}) if trainer else w


def _legal_random(spec, flat_mask, rng) -> np.ndarray:
    """A uniformly random legal action, head by head (exercises germinate/advance/cull, not just WAIT)."""
    m = ActionMasks.from_flat(spec, flat_mask)
    op = int(rng.choice(np.flatnonzero(m.op)))
    slot_mask, _, _ = m.head_masks(op, 0)
    slot = int(rng.choice(np.flatnonzero(slot_mask)))
    _, bp_mask, blend_mask = m.head_masks(op, slot)
    return FactoredAction(Op(op), slot, int(rng.choice(np.flatnonzero(bp_mask))),
                          int(rng.choice(np.flatnonzero(blend_mask)))).as_array()


def _grow(spec, flat_mask) -> np.ndarray:
    """Advance a seed where allowed, else germinate the largest blueprint: seeds go live early, epochs grow dear."""
    m = ActionMasks.from_flat(spec, flat_mask)
    op = next((op for op in (Op.ADVANCE, Op.GERMINATE) if m.op[op]), Op.WAIT)
    slot = int(np.flatnonzero(m.head_masks(op, 0)[0])[0])
    return FactoredAction(op, slot, int(np.flatnonzero(m.head_masks(op, slot)[1])[-1])).as_array()


def _play_both(world, n, steps, workers, seeds, data_seed, rng_seed=0):
    venv = EsperVectorEnv(world, num_envs=n, workers=workers)
    lone = [EsperEnv(world) for _ in range(n)]
    vobs, _ = venv.reset(seed=seeds, options={"data_seed": data_seed})
    lobs = [env.reset(seed=s, options={"data_seed": data_seed})[0] for env, s in zip(lone, seeds)]
    rng, spec, trace = np.random.default_rng(rng_seed), lone[0].action_spec, []
    for _ in range(steps):
        actions = np.stack([_legal_random(spec, vobs["action_mask"][i], rng) for i in range(n)])
        vobs, vrew, vterm, _, _ = venv.step(actions)
        lone_steps = [env.step(a) for env, a in zip(lone, actions)]
        trace.append((vobs, vrew, vterm, lone_steps))
    return venv, lone, trace


def test_vector_env_equals_lone_envs_on_the_same_seeds_and_stream():
    world = _world()
    venv, lone, trace = _play_both(world, n=3, steps=5, workers=2, seeds=[7, 8, 9], data_seed=11)
    ops = set()
    for vobs, vrew, vterm, lone_steps in trace:
        for i, (lobs, lrew, lterm, _, info) in enumerate(lone_steps):
            assert np.array_equal(vobs["features"][i], lobs["features"])
            assert np.array_equal(vobs["action_mask"][i], lobs["action_mask"])
            assert vrew[i] == lrew and vterm[i] == lterm
            ops.add(info["op"])
    assert ops - {"WAIT"}, "the random legal policy should have done more than wait"
    for world_env, env in zip(venv.envs, lone):  # the models themselves, weight for weight
        v_state, l_state = world_env.model.state_dict(), env.model.state_dict()
        assert v_state.keys() == l_state.keys()
        assert all(torch.equal(v_state[k], l_state[k]) for k in v_state)
    assert all(vterm for vterm in trace[-1][2]), "5 epochs: every episode ended on the last step"
    venv.close()


def test_thread_count_does_not_change_results():
    world = _world()
    one, _, trace1 = _play_both(world, n=3, steps=3, workers=1, seeds=[1, 2, 3], data_seed=4)
    two, _, trace2 = _play_both(world, n=3, steps=3, workers=3, seeds=[1, 2, 3], data_seed=4)
    for (o1, r1, *_), (o2, r2, *_) in zip(trace1, trace2):
        assert np.array_equal(o1["features"], o2["features"]) and np.array_equal(r1, r2)
    one.close(), two.close()


def test_different_seeds_give_different_worlds():
    """The equality above is not vacuous: another model seed or another data stream changes the numbers."""
    world = _world()
    venv = EsperVectorEnv(world, num_envs=2, workers=1)
    obs, _ = venv.reset(seed=[1, 2], options={"data_seed": 3})
    wait = np.zeros((2, 4), dtype=np.int64)
    obs, rew, *_ = venv.step(wait)
    assert not np.array_equal(obs["features"][0], obs["features"][1])
    other = EsperEnv(world)
    other.reset(seed=1, options={"data_seed": 99})
    lobs, lrew, *_ = other.step(wait[0])
    assert not np.array_equal(lobs["features"], obs["features"][0])


def test_next_step_autoreset_restarts_a_finished_world_without_training_it():
    world = _world(epochs=2)
    venv = EsperVectorEnv(world, num_envs=2, workers=1)
    venv.reset(seed=0)
    wait = np.zeros((2, 4), dtype=np.int64)
    venv.step(wait)
    _, _, term, trunc, _ = venv.step(wait)
    assert term.all() and not trunc.any()
    obs, rew, term, trunc, _ = venv.step(wait)  # the autoreset step
    assert np.array_equal(rew, np.zeros(2)) and not term.any()
    assert all(env.trainer.epoch == 0 for env in venv.envs), "a world that was just reset must not have trained"
    assert venv.observation_space.contains(obs)
    obs, rew, term, _, _ = venv.step(wait)  # and the next step trains again
    assert all(env.trainer.epoch == 1 for env in venv.envs) and not term.any()
    venv.close()


def test_factory_gives_lone_or_vector_env():
    cfg = WorldConfig.model_validate(WORLD).model_dump(mode="json")
    assert isinstance(make_esper_env(cfg), EsperEnv)
    vec = make_esper_env({**cfg, "num_envs": 3})
    assert isinstance(vec, EsperVectorEnv) and vec.num_envs == 3
    assert vec.observation_space.shape is None and vec.action_space.shape == (3, 4)
    vec.close()


@pytest.mark.parametrize("bad", [{"trainer": {"epochs": 0}}, {"data": {"source": "synthetic", "limit": -1}}])
def test_factory_rejects_bad_world_config(bad):
    with pytest.raises(ValueError):
        make_esper_env({**bad, "num_envs": 2})


def test_rllib_steps_the_vector_env(ray_session):
    cfg = TrainTamiyoConfig.model_validate({
        "world": {**WORLD, "trainer": {"epochs": 3, "batch_size": 16, "max_batches_per_epoch": 1}},
        "ppo": {"train_batch_size": 24, "minibatch_size": 12, "num_epochs": 1, "hidden": 32, "num_envs_per_env_runner": 3},
    })
    algo = build_ppo_config(cfg, plan_runners({"CPU": 2.0}, requested=1)).build_algo()
    try:
        placement = runner_placement(algo)
        assert [r["env"] for r in placement["runners"]] == ["EsperVectorEnv × 3"]
        result = algo.train()["env_runners"]
        assert result["num_episodes"] >= 3 and result["episode_len_mean"] == 3
    finally:
        algo.stop()


@pytest.mark.parametrize("workers", [1, 2])
def test_equal_compute_worlds_stop_at_their_budget_as_lone_envs_do(workers):
    """Equal-compute worlds (a FLOPs budget of 2.5 bare-host epochs, 8 epochs at most): each world stops taking
    the shared batches at the batch that spends its budget, mid-epoch, while the others go on; up to each
    world's episode end its rewards, observations, termination, FLOPs and weights equal a lone env's.
    World 0 grows seeds at once (its budget runs out in its second epoch), world 1 waits (the bare host: 2 batches
    into its third), world 2 plays at random."""
    world, n, seeds = _world(epochs=8, budget_host_epochs=2.5), 3, [7, 8, 9]
    venv, lone = EsperVectorEnv(world, num_envs=n, workers=workers), [EsperEnv(world) for _ in range(n)]
    vobs, _ = venv.reset(seed=seeds, options={"data_seed": 11})
    for env, s in zip(lone, seeds):
        env.reset(seed=s, options={"data_seed": 11})
    rng, ended = np.random.default_rng(0), [None] * n  # the step at which each world's (first) episode ended
    for step in range(world.trainer.epochs):
        spec, masks = lone[0].action_spec, vobs["action_mask"]
        actions = np.stack([_grow(spec, masks[0]), np.zeros(4, dtype=np.int64), _legal_random(spec, masks[2], rng)])
        vobs, vrew, vterm, _, _ = venv.step(actions)
        for i in (i for i in range(n) if ended[i] is None):
            lobs, lrew, lterm, _, info = lone[i].step(actions[i])
            assert info["counts"]["invalid"] == 0
            assert np.array_equal(vobs["features"][i], lobs["features"]), (step, i)
            assert np.array_equal(vobs["action_mask"][i], lobs["action_mask"]) and vrew[i] == lrew and vterm[i] == lterm
            v, t = venv.envs[i].trainer, lone[i].trainer
            assert v.train_flops == t.train_flops and v.epoch == t.epoch
            if lterm:  # the vector env resets this world next step: compare the models now
                ended[i] = step
                assert t.exhausted and t.epoch < world.trainer.epochs, "the budget, not the epoch cap, ended it"
                assert i != 1 or t.train_flops == pytest.approx(8 / 3 * t.host_epoch_flops), "bare host: 2 of 3 batches"
                v_state, l_state = venv.envs[i].model.state_dict(), lone[i].model.state_dict()
                assert all(torch.equal(v_state[k], l_state[k]) for k in l_state)
        if None not in ended:
            break
    assert None not in ended and len(set(ended)) > 1, f"worlds should end at different steps here: {ended}"
    venv.close()
