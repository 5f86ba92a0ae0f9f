"""The Markdown a PPO run (and a clone's evaluation) reports: controllers side by side, paired differences."""

from __future__ import annotations

from esper.simic.evaluate import format_metric


def evaluation_lines(evaluation: dict, paired: dict, metric: str) -> list[str]:
    """Markdown tables: each controller's summary (esper.simic.evaluate.summarise) and the paired differences
    (compare_paired) with their standard errors; ✓ marks a difference above 2 SE."""
    episodes = next(iter(evaluation.values()))["episodes"] if evaluation else 0
    lines = [f"Evaluation on {episodes} fixed seeds, the same for every controller (mean ± std [standard error]):", "",
             f"| controller | final {metric} | return | germinated | fossilized | excess params |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, e in evaluation.items():
        m = lambda k, fmt: f"{format(e[k]['mean'], fmt)} ± {format(e[k]['std'], fmt.lstrip('+'))}"
        fm = " ± ".join(format_metric(e["final_metric"][k], metric) for k in ("mean", "std"))
        lines.append(f"| {name} | {fm} [{format_metric(e['final_metric']['se'], metric)}] | {m('episode_return', '+.3f')} "
                     f"[{e['episode_return']['se']:.3f}] | {m('germinated', '.1f')} | {m('fossilized', '.1f')} | "
                     f"{m('final_excess_ratio', '.2f')} |")
    if paired:
        lines += ["", "Paired differences per seed, mean [standard error]; ✓ = ahead by more than 2 SE:", "",
                  f"| comparison | Δ final {metric} | Δ return |", "|---|---:|---:|"]
        for name, d in paired.items():
            cell = lambda x, fmt: f"{fmt(x['mean'])} [{fmt(x['se']).lstrip('+')}]{' ✓' if x['beats_by_2se'] else ''}"
            lines.append(f"| {name} | {cell(d['final_metric'], lambda v: format_metric(v, metric, signed=True))} | "
                         f"{cell(d['episode_return'], lambda v: format(v, '+.3f'))} |")
    return lines


def run_markdown(cfg, out, s: dict) -> str:
    """summary.md of a PPO run: what ran, where the outputs are, the warm start, the evaluation."""
    lines = [f"# Tamiyo PPO run — world `{cfg.world.name}`", "",
             f"{len(s['history'])} iterations, {s['wall_seconds'] / 60:.1f} min; {s['plan']}; code {s['code_version']}.",
             f"Outputs: `{out}/agent.pt`, `{out}/checkpoint/`, `{out}/progress.jsonl`.", ""]
    if s.get("pretrain"):
        p, bc = s["pretrain"], s["pretrain"]["bc"]
        lines += [f"Warm start learned in this run ({p['seconds'] / 60:.1f} min): {bc['recorded_episodes']} episodes "
                  f"recorded in `{out}/offline/`, behaviour-cloned (RLlib BC, {bc['iterations']} steps) from the best "
                  f"{bc['episodes']} ({bc['top_pct']:g} %: {bc['chosen_by_controller']}) into `{out}/pretrain/agent.pt`; "
                  f"held-out greedy = recorded action {bc['held_out']['greedy_matches']:.0%}.", ""]
    if s.get("selection"):
        v = s["selection"]
        lines += [f"Validation ({v['seeds'][0]}–{v['seeds'][1]}, greedy mean return): fine-tuned "
                  f"{v['mean_return']['fine-tuned']:+.3f}, clone {v['mean_return']['clone']:+.3f} → `agent.pt` (`ppo` "
                  f"below) is the **{v['kept']}**; the fine-tuned agent is `{out}/finetuned_agent.pt`.", ""]
    if s["evaluation"]:
        lines += evaluation_lines(s["evaluation"], s.get("paired", {}), cfg.world.data.metric_name)
    return "\n".join(lines) + "\n"
