"""Bad input to the recipes fails at start-up: one line naming what is wrong, exit code ≠ 0, nothing started.

Each case runs a script as `python experiments/<script>.py …` would, as __main__ in this interpreter
(tests/_support.run_script), which also fails a case that left Ray running; a case that started a recording or a
first run would take far longer than the time limit here."""

from __future__ import annotations

from pathlib import Path

import pytest

from _support import run_script

ROOT = Path(__file__).resolve().parents[1]
BLUEPRINT = ["--set", "world.kasmina.blueprints=[warp_drive]"]
DATA = ["--set", "world.data.source=/nonexistent/x.parquet"]


def _not_an_agent(tmp: Path) -> str:
    path = tmp / "notes.pt"
    path.write_text("these are my notes, not an agent\n")
    return str(path)


def _sweep(tmp: Path, override: str) -> str:
    path = tmp / "sweep.yaml"
    path.write_text(f"base: smoke\nbase_overrides: ['{override}']\nsearch:\n  world.reward.rent_lambda: {{grid: [0.1]}}\n")
    return str(path)


CASES = {  # id: (script, arguments (tmp → list), what the one line must name)
    "ppo-blueprint": ("ppo_multislot", lambda t: BLUEPRINT, "warp_drive"),
    "ppo-data": ("ppo_multislot", lambda t: DATA, "world.data.source"),
    "ppo-agent": ("ppo_multislot", lambda t: ["--set", "pretrain=null", "--set", f"ppo.init_agent={_not_an_agent(t)}"],
                  "ppo.init_agent"),
    "ppo-preset": ("ppo_multislot", lambda t: ["--preset", "nowhere"], "--preset"),
    "ppo-field": ("ppo_multislot", lambda t: ["--set", "ppo.itrations=3"], "ppo.itrations"),
    "compare-blueprint": ("compare_controllers", lambda t: BLUEPRINT + ["--out", str(t / "c")], "warp_drive"),
    "compare-data": ("compare_controllers", lambda t: DATA + ["--out", str(t / "c")], "world.data.source"),
    "compare-agent": ("compare_controllers", lambda t: ["--set", f"agent={_not_an_agent(t)}", "--set", "arms=[wait,ppo]",
                                                        "--out", str(t / "c")], "notes.pt"),
    "compare-arm": ("compare_controllers", lambda t: ["--set", "arms=[wait,warp]"], "unknown controller 'warp'"),
    "evaluate-agent": ("evaluate_tamiyo", lambda t: ["--agent", _not_an_agent(t), "--out", str(t / "e")], "notes.pt"),
    "evaluate-blueprint": ("evaluate_tamiyo", lambda t: ["--preset", "smoke", *BLUEPRINT, "--out", str(t / "e")],
                           "warp_drive"),
    "evaluate-data": ("evaluate_tamiyo", lambda t: ["--preset", "smoke", *DATA, "--out", str(t / "e")],
                      "world.data.source"),
    "record-blueprint": ("record_episodes", lambda t: [*BLUEPRINT, "--out", str(t / "r")], "warp_drive"),
    "record-data": ("record_episodes", lambda t: [*DATA, "--out", str(t / "r")], "world.data.source"),
    "sweep-blueprint": ("tune_rewards", lambda t: ["--preset", _sweep(t, "world.kasmina.blueprints=[warp_drive]")],
                        "warp_drive"),
    "sweep-data": ("tune_rewards", lambda t: ["--preset", _sweep(t, "world.data.source=/nonexistent/x.parquet")],
                   "world.data.source"),
    "pretrain-data": ("pretrain_tamiyo", lambda t: ["--data", str(t / "nothing"), "--out", str(t / "bc")], "manifest.json"),
    "family-preset": ("family_study", lambda t: ["--preset", "nowhere", "--out", str(t / "f")], "nowhere"),
    "family-data": ("family_study", lambda t: [*DATA, "--out", str(t / "f")], "world.data.source"),
    "merge-folder": ("merge_compare", lambda t: ["--out", str(t / "m"), f"a={t / 'none'}"], "summary.json"),
    "verdict-file": ("family_verdict", lambda t: ["--plans", str(t / "none.json"), str(t / "none.json")], "none.json"),
    "plot-file": ("plot_run", lambda t: [str(t / "none.parquet")], "none.parquet"),
    "ppo-frozen-core": ("ppo_multislot", lambda t: ["--set", "pretrain=null", "--set", "ppo.network=core",
                                                    "--set", f"ppo.frozen_core={t / 'none.pt'}"], "ppo.frozen_core"),
    "ppo-core-not-a-core": ("ppo_multislot", lambda t: ["--set", "pretrain=null", "--set", "ppo.network=core",
                                                        "--set", f"ppo.frozen_core={_not_an_agent(t)}"], "esper.core"),
    "parts-file": ("tamiyo_parts", lambda t: [_not_an_agent(t)], "notes.pt"),
    "serve-domain": ("serve_tamiyo", lambda t: ["--domain", "text"], "--domain 'text'"),
    "serve-domains-on-flat": ("serve_tamiyo", lambda t: ["--domain", f"a={_not_an_agent(t)}"], "notes.pt"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_and_starts_nothing(case, tmp_path):
    script, args, named = CASES[case]
    code, stdout, stderr, seconds = run_script(script, *args(tmp_path))
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code != 0, stdout[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error:"), stderr[-3000:]
    assert named in lines[0], lines[0]
    assert seconds < 20, (seconds, stdout[-2000:])
    assert not (tmp_path / "c" / "runs.jsonl").exists() and not (tmp_path / "r" / "episodes.jsonl").exists()
