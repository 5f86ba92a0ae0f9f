"""The PPO training driver behind experiments/ppo_multislot.py: Ray up, train, checkpoint, export agent.pt."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import ray

from esper.leyline import Op
from esper.leyline.features import feature_names
from esper.nissa.dashboards import tensorboard_command
from esper.provenance import code_version
from esper.runtime.cluster import grow_cluster, release_request, runner_bundles, runner_placement
from esper.runtime.resources import cuda_usable_on_gpu_workers, plan_runners
from esper.simic.ppo import algo as keys
from esper.simic.config import TrainTamiyoConfig
from esper.tolaria.builder import action_spec
from esper.study.episodes import format_metric
from esper.simic.ppo.algo import build_ppo_config, ppo_iteration, warm_start
from esper.study.report import run_markdown
from esper.simic.offline.record import FIRST_EVAL_SEED as EVAL_SEED_BASE  # disjoint from training's and recordings' seeds
from esper.simic.offline.record import FIRST_VALIDATION_SEED

ESPER_ITERATION_FILE = "esper_iteration.txt"
PROGRESS_FILE = "progress.jsonl"

log = logging.getLogger(__name__)  # progress at INFO: ppo_multislot.py prints it
OP_NAMES = [op.name.lower() for op in Op]


def _progress(it: int, total: int, r: dict, seconds: float, kl_penalty: bool, metric: str) -> dict:
    """One progress row (printed, and appended to progress.jsonl). RLlib reports the KL only when the KL penalty
    is on (ppo.kl_coeff > 0); otherwise the column shows "—" rather than RLlib's placeholder 0."""
    er, lr = r.get("env_runners", {}), r.get("learners", {}).get("default_policy", {})
    row = {
        "iteration": it, "seconds": round(seconds, 1),
        "return_mean": er.get("episode_return_mean"), "episode_len_mean": er.get("episode_len_mean"),
        "final_metric": er.get(keys.FINAL_METRIC), "excess_ratio": er.get(keys.EXCESS_RATIO),
        "entropy": lr.get("entropy"), "kl": lr.get("mean_kl_loss") if kl_penalty else None, "vf_loss": lr.get("vf_loss"),
        "op_fraction": {op: er.get(keys.OP_FRACTION + op) for op in OP_NAMES},
        "env_steps": er.get("num_env_steps_sampled_lifetime"),
    }
    f = lambda v, fmt: "—" if v is None or v != v else format(v, fmt)  # None or NaN (no episode finished yet)
    ops = " ".join(f"{k[:4]} {f(v, '.0%')}" for k, v in row["op_fraction"].items())
    log.info(f"iter {it:3d}/{total}  return {f(row['return_mean'], '+.3f')}  len {f(row['episode_len_mean'], '.1f')}  "
             f"final {metric} {'—' if row['final_metric'] is None else format_metric(row['final_metric'], metric)}  ops [{ops}]  entropy {f(row['entropy'], '.3f')}  "
             f"kl {f(row['kl'], '.4f')}  ({seconds:.0f}s)")
    return row


_CHECKPOINT_FOLDERS = ("checkpoint", "checkpoint.tmp", "checkpoint.old")  # by preference on a tie


def checkpoint_iteration(folder: Path) -> int | None:
    """The iteration a checkpoint folder holds, or None if it is not a complete one (its marker is written last)."""
    try:
        return int((folder / ESPER_ITERATION_FILE).read_text())
    except (OSError, ValueError):
        return None


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint in a run folder. A crash at any point of `save_checkpoint` leaves one:
    `checkpoint/` normally; `checkpoint.old/` (and perhaps a complete `checkpoint.tmp/`) between its renames."""
    found = [(it, -rank, out / name) for rank, name in enumerate(_CHECKPOINT_FOLDERS)
             if (it := checkpoint_iteration(out / name)) is not None]
    return max(found)[2] if found else None


def adopt_latest_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint, moved to `checkpoint/` if a crash left it elsewhere — the next save starts by
    deleting `checkpoint.tmp/` and ends by deleting `checkpoint.old/`, so a run must not continue from either. Each
    step leaves a complete copy in place: a crash here is as safe as one in `save_checkpoint`."""
    found, final = latest_checkpoint(out), out / "checkpoint"
    if found is None or found == final:
        return found
    shutil.rmtree(final, ignore_errors=True)  # incomplete or older than `found`
    found.rename(final)
    return final


def save_checkpoint(algo, out: Path, iteration: int = 0) -> None:
    """Write to a fresh folder, then swap it in: a crash mid-save never destroys the last good checkpoint, and
    latest_checkpoint() finds it whichever step the crash interrupted."""
    tmp, final = out / "checkpoint.tmp", out / "checkpoint"
    shutil.rmtree(tmp, ignore_errors=True)
    algo.save_to_path(str(tmp.resolve()))
    (tmp / ESPER_ITERATION_FILE).write_text(str(iteration))  # which progress line this state belongs to
    old = out / "checkpoint.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _start_ray(address: str | None, dashboard: bool) -> dict:
    from esper.runtime import local_ray

    if address:
        local_ray.init(address)  # the cluster's token: docs/cluster.md
        return ray.cluster_resources()
    context = local_ray.init(None, include_dashboard=dashboard, configure_logging=True, logging_level="WARNING")
    if dashboard:  # loopback only, like the whole local cluster; the page asks for the token in ~/.ray/auth_token
        log.info(local_ray.dashboard_message(context))
    return ray.available_resources()


def _grow_if_autoscaling(cfg: TrainTamiyoConfig, address: str | None, resources: dict) -> dict:
    """On an attached cluster, ask its autoscaler for the runners first (a head with CPU: 0 starts with nothing)."""
    wanted = cfg.ppo.num_env_runners
    if not address or wanted == 0:
        return resources
    if wanted is None:
        if resources.get("CPU", 0.0) > 0:
            return resources  # size from what is there
        wanted = 1
        log.info("the cluster has no CPUs yet (an autoscaling head keeps none): asking for 1 env runner; "
                 "pass --num-env-runners N for more")
    return grow_cluster(runner_bundles(wanted, cfg.ppo.gpus_per_env_runner), cfg.ppo.cluster_wait_s)


def _warm_start(cfg: TrainTamiyoConfig, out: Path, init_agent, fresh: bool, command: str):
    """PPO's starting agent and the pretraining summary: `init_agent` as given, or (cfg.pretrain) a clone of
    episodes recorded now — made on a fresh start, read back on a resume."""
    from esper.simic.offline.pretrain import WARM_START_FILE, warm_start_from_recording
    from esper.tamiyo.agent_file import load_agent

    if cfg.pretrain is None:
        return init_agent, None
    if not fresh:
        saved = out / "pretrain" / WARM_START_FILE
        return None, json.loads(saved.read_text()) if saved.is_file() else None
    path, summary = warm_start_from_recording(cfg, out, command)
    return load_agent(path, expected_features=feature_names(action_spec(cfg.world))), summary


def _keep_the_better(cfg: TrainTamiyoConfig, out: Path) -> dict | None:
    """Model selection after fine-tuning a clone: both play greedily on validation seeds (never an evaluation
    episode); agent.pt becomes the clone if the clone earns the higher mean return. PPO's first updates start from
    a critic BC never trained and can undo what the clone learned (docs/results.md §13). The fine-tuned agent stays
    in finetuned_agent.pt."""
    from esper.study.episodes import evaluate_in_parallel

    n = cfg.pretrain.validation_episodes
    if n == 0:
        return None
    seeds = [FIRST_VALIDATION_SEED + i for i in range(n)]
    log.info(f"validating the fine-tuned agent against its clone on {n} episodes (seeds {seeds[0]}–{seeds[-1]})")
    agents = {"fine-tuned": out / "agent.pt", "clone": out / "pretrain" / "agent.pt"}
    stats = evaluate_in_parallel(cfg.world, {k: ("ppo", str(p)) for k, p in agents.items()}, seeds)
    returns = {k: sum(e.episode_return for e in v) / n for k, v in stats.items()}
    kept = "clone" if returns["clone"] > returns["fine-tuned"] else "fine-tuned"
    shutil.copyfile(agents["fine-tuned"], out / "finetuned_agent.pt")
    if kept == "clone":
        shutil.copyfile(agents["clone"], out / "agent.pt")
    log.info(f"  mean return: fine-tuned {returns['fine-tuned']:+.3f}, clone {returns['clone']:+.3f} → agent.pt is the {kept}")
    return {"seeds": [seeds[0], seeds[-1]], "mean_return": returns, "kept": kept}


def _evaluate(cfg: TrainTamiyoConfig, out: Path, pretrained: bool) -> tuple[dict, dict]:
    """The trained agent (and the clone it started from, unless validation compared them) beside WAIT-only, random
    and the heuristic on the same evaluation seeds, in parallel Ray tasks; summaries and the agent's paired
    differences."""
    from esper.study.episodes import compare_paired, evaluate_in_parallel, summarise

    seeds = [EVAL_SEED_BASE + i for i in range(cfg.eval_episodes)]
    if not seeds:
        return {}, {}
    log.info(f"evaluating the agent on {len(seeds)} episodes beside WAIT-only, random and the heuristic")
    controllers = {"ppo": ("ppo", str(out / "agent.pt"))}
    if pretrained:
        controllers["bc clone"] = ("ppo", str(out / "pretrain" / "agent.pt"))
    controllers |= {"wait": ("wait", None), "random": ("random", None), "heuristic": ("heuristic", None)}
    stats = evaluate_in_parallel(cfg.world, controllers, seeds)
    baselines = [name for name in controllers if name != "ppo"]
    return {k: summarise(v) for k, v in stats.items()}, compare_paired(stats, "ppo", baselines)


def train_tamiyo(cfg: TrainTamiyoConfig, out: Path, address: str | None = None, resume: bool = False,
                 init_agent=None, ray_dashboard: bool = True, command: str = "") -> str:
    """The main job, phase by phase: Ray up; the warm start (`init_agent`, or with cfg.pretrain a clone of
    episodes recorded now); PPO built on the runners the cluster offers; restored from the run's checkpoint
    (`resume`) or warm-started; trained, checkpointing as it goes; exported as agent.pt; the clone kept if it
    validates better; evaluated beside the baselines; summarised. Returns the Markdown summary."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.model_dump(mode="json"), indent=2))
    version, t0 = code_version(), time.perf_counter()
    resources = _start_ray(address, ray_dashboard)
    try:
        resume = resume and adopt_latest_checkpoint(out) is not None
        init_agent, pretrain = _warm_start(cfg, out, init_agent, not resume, command)
        algo, plan, placement = _build_ppo(cfg, out, address, resources)
        history = _restore(algo, out) if resume else _start_fresh(algo, cfg, out, init_agent)
        history = _train(algo, cfg, out, history, t0)
        _export(algo, cfg, out, history, version)
        selection = _keep_the_better(cfg, out) if pretrain is not None else None
        evaluation, paired = _evaluate(cfg, out, pretrain is not None and selection is None)
    finally:
        if address:
            release_request()
        ray.shutdown()
    summary = {"config": cfg.model_dump(mode="json"), "code_version": version, "plan": plan.describe(),
               "placement": placement, "wall_seconds": time.perf_counter() - t0, "history": history,
               "pretrain": pretrain, "selection": selection, "evaluation": evaluation, "paired": paired}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    md = run_markdown(cfg, out, summary)
    (out / "summary.md").write_text(md)
    return md


def _build_ppo(cfg: TrainTamiyoConfig, out: Path, address: str | None, resources: dict):
    """RLlib PPO on the env runners the cluster can hold (grown first on an autoscaling cluster; GPU runners only
    where CUDA works): the algorithm, the runner plan and where each runner landed."""
    resources = _grow_if_autoscaling(cfg, address, resources)
    plan = plan_runners(resources, cfg.ppo.num_env_runners, cfg.ppo.gpus_per_env_runner)
    if plan.gpus_per_runner > 0 and not cuda_usable_on_gpu_workers(plan.gpus_per_runner):
        log.warning("the cluster advertises GPUs but CUDA is not usable on them; env runners use CPU")
        plan = plan_runners(resources, cfg.ppo.num_env_runners, 0.0)
    log.info(f"world {cfg.world.name!r}: {plan.describe()}; output {out}")
    algo = build_ppo_config(cfg, plan).build_algo()
    placement = runner_placement(algo)
    for r in placement["runners"]:
        log.info(f"  env runner on node {r['node_id']}  GPU ids {r['gpu_ids'] or '-'}  device {r['device']}  "
                 f"env {r['env']}")
    return algo, plan, placement


def _restore(algo, out: Path) -> list[dict]:
    """Continue from the run's newest complete checkpoint: its progress log cut back to the checkpoint's
    iteration (iterations after it are redone)."""
    checkpoint = adopt_latest_checkpoint(out)
    algo.restore_from_path(str(checkpoint.resolve()))
    path = out / PROGRESS_FILE
    done = checkpoint_iteration(checkpoint)
    history = [json.loads(line) for line in (path.read_text().splitlines() if path.exists() else [])[:done]]
    path.write_text("".join(json.dumps(h) + "\n" for h in history))
    log.info(f"resumed from {checkpoint} after iteration {done}")
    return history


def _start_fresh(algo, cfg: TrainTamiyoConfig, out: Path, init_agent) -> list[dict]:
    (out / PROGRESS_FILE).unlink(missing_ok=True)  # a fresh run in an old folder starts a fresh log
    if init_agent is not None:
        warm_start(algo, init_agent)
        log.info(f"PPO starts from {cfg.ppo.init_agent or out / 'pretrain' / 'agent.pt'}")
    return []


def _train(algo, cfg: TrainTamiyoConfig, out: Path, history: list[dict], t0: float) -> list[dict]:
    """PPO iterations up to cfg.ppo.iterations: each one's progress line (printed, appended to progress.jsonl)
    and dashboard scalars (TensorBoard through Nissa); a checkpoint every `checkpoint_every` and at the end."""
    from esper.nissa.tensorboard import ScalarWriter

    first = len(history) + 1
    writer = ScalarWriter(out, purge_step=first if first > 1 else None)  # a resumed run drops redone iterations
    log.info(f"TensorBoard: {tensorboard_command(out)}  (or --logdir runs/ for every run and sweep)")
    for it in range(first, cfg.ppo.iterations + 1):
        result, scalars = ppo_iteration(algo, cfg)
        history.append(_progress(it, cfg.ppo.iterations, result, time.perf_counter() - t0, cfg.ppo.kl_coeff > 0,
                                 cfg.world.data.metric_name))
        writer.scalars(scalars, it)
        with (out / PROGRESS_FILE).open("a") as f:
            f.write(json.dumps(history[-1]) + "\n")
        if it % cfg.ppo.checkpoint_every == 0 or it == cfg.ppo.iterations:
            save_checkpoint(algo, out, it)
    writer.close()
    return history


def _export(algo, cfg: TrainTamiyoConfig, out: Path, history: list[dict], version: str) -> None:
    """agent.pt: the trained policy with its action layout, features and config (loads without pickle)."""
    from esper.tamiyo.agent_file import save_agent

    spec, net = action_spec(cfg.world), algo.get_module().net
    extra = {"iterations": len(history), "env_steps": history[-1]["env_steps"] if history else 0}
    save_agent(out / "agent.pt", net, spec, feature_names(spec), cfg.model_dump(mode="json"), version, extra=extra)
    if cfg.ppo.network == "core":  # the parts, for other domains and for Serve: the core, or this domain's adapter
        from esper.tamiyo.parts import save_adapter, save_core

        provenance = {"config": cfg.model_dump(mode="json"), "code_version": version, **extra}
        if net.adapter is not None:
            save_adapter(out / "adapter.pt", net.adapter, provenance)
        else:
            save_core(out / "core.pt", net.core, provenance)
    algo.stop()
