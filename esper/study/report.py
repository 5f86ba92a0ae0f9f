"""The Markdown of evaluations: controllers side by side, paired differences, plan searches, PPO run summaries."""

from __future__ import annotations

from esper.study.episodes import format_metric


def evaluation_lines(evaluation: dict, paired: dict, metric: str) -> list[str]:
    """Markdown tables: each controller's summary (esper.study.episodes.summarise) and the paired differences
    (compare_paired) with their standard errors; ✓ marks a difference above 2 SE. The one evaluation table: PPO
    runs' summaries, evaluate_tamiyo and the family study all print it."""
    episodes = next(iter(evaluation.values()))["episodes"] if evaluation else 0
    lines = [f"{episodes} evaluation episodes per controller, the same seeds for each; mean ± sample std "
             "[standard error]:", "",
             f"| controller | final {metric} | return | germinated | fossilized | culled | final excess params |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, e in evaluation.items():
        m = lambda k, fmt: f"{format(e[k]['mean'], fmt)} ± {format(e[k]['std'], fmt.lstrip('+'))}"
        fm = " ± ".join(format_metric(e["final_metric"][k], metric) for k in ("mean", "std"))
        lines.append(f"| {name} | {fm} [{format_metric(e['final_metric']['se'], metric)}] | {m('episode_return', '+.3f')} "
                     f"[{e['episode_return']['se']:.3f}] | {m('germinated', '.2f')} | {m('fossilized', '.2f')} | "
                     f"{m('culled', '.2f')} | {m('final_excess_ratio', '.2f')} |")
    if paired:
        lines += ["", "Paired differences per seed, mean [standard error]; ✓ = ahead by more than 2 SE:", "",
                  f"| comparison | Δ final {metric} | Δ return |", "|---|---:|---:|"]
        for name, d in paired.items():
            cell = lambda x, fmt: f"{fmt(x['mean'])} [{fmt(x['se']).lstrip('+')}]{' ✓' if x['beats_by_2se'] else ''}"
            lines.append(f"| {name} | {cell(d['final_metric'], lambda v: format_metric(v, metric, signed=True))} | "
                         f"{cell(d['episode_return'], lambda v: format(v, '+.3f'))} |")
    return lines


def evaluation_markdown(report: dict) -> str:
    """evaluate_tamiyo's report: one world's tables, or each named world's, the pooled ones and the rent response;
    then the plan search, if one ran."""
    def tables(entry: dict) -> str:
        metric = next(iter(entry["results"].values()))["metric_name"]
        return "\n".join(evaluation_lines(entry["results"], entry["paired"], metric)) + "\n"

    if "worlds" not in report:
        md = tables(report)
    else:
        md = "".join(f"## {w}\n\n" + tables(e) + "\n" for w, e in report["worlds"].items())
        md += f"## Pooled over {len(report['worlds'])} worlds\n\n" + tables(report["pooled"])
        md += rent_table(report["rent_response"])
    if report.get("plan_search"):
        md += plan_table(report["plan_search"], next(iter((report.get("pooled") or report)["results"].values()))["metric_name"])
    return md


def plan_table(ranked: list[dict], metric: str) -> str:
    lines = ["", f"Plan search ({len(ranked)} fixed plans incl. WAIT), by mean return; best: {ranked[0]['controller']}",
             "", f"| plan | return [SE] | final {metric} |", "|---|---:|---:|"]
    lines += [f"| {x['controller']} | {x['return']:+.3f} [{x['se']:.3f}] | {format_metric(x['final_metric'], metric)} |"
              for x in ranked]
    return "\n".join(lines) + "\n"


def rent_table(response: dict) -> str:
    lines = ["", "Response to rent across worlds: Spearman ρ(λ, final excess params) (— = no variation), and what "
             "each controller grew per episode in each world", "", "| controller | ρ | growth per world |", "|---|---:|---|"]
    for name, r in response.items():
        rho = "—" if r["spearman_rent_vs_ratio"] is None else f"{r['spearman_rent_vs_ratio']:+.2f}"
        grown = "; ".join(f"{w['world']} (λ {w['rent']:g}): " + (", ".join(f"{g} {k:.1f}" for g, k in w["germinations"].items())
                                                               or "nothing") for w in r["worlds"])
        lines.append(f"| {name} | {rho} | {grown} |")
    return "\n".join(lines) + "\n"


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
