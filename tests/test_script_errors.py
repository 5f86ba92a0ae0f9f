"""Bad input to a script ends it at start-up in one line, exit code ≠ 0, no traceback, and within seconds: before any
Ray cluster, server, recording or training starts. A mistake in a config field names the field; a mistake argparse
catches is its usage line and one error line.

Each case runs the script as `python experiments/<script>.py …` would, as __main__ in this interpreter
(tests/_support.run_script: no fresh torch import per case), and checks it left no Ray cluster behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from _support import run_script

ROOT = Path(__file__).resolve().parents[1]
WORLD_SCRIPTS = ["bench_pretrain", "bench_vector_env", "remote_training", "demo_plane", "governor_faults"]
"""Scripts that load a --preset world: every bad world must fail before anything runs."""
BAD_WORLDS = {
    "unknown preset": (["--preset", "no_such_preset"], "--preset: unknown preset"),
    "unknown field": (["--set", "world.trainer.epochz=3"], "epochz"),
    "unknown blueprint": (["--set", "world.kasmina.blueprints=[warp_drive]"], "warp_drive"),
    "missing data": (["--set", "world.data.source=/nonexistent/x.parquet"], "/nonexistent/x.parquet"),
}
MAX_SECONDS = 20
"""Far below any cluster start, episode or epoch on this machine; generous for a loaded 2-core box."""


def _run(script: str, *args: str, cwd: Path = ROOT, monkeypatch=None) -> tuple[int, str, float]:
    code, _, stderr, seconds = run_script(script, *args, cwd=cwd)
    return code, stderr, seconds


def _assert_one_line(code: int, stderr: str, seconds: float, needle: str, usage: bool = False) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code != 0, stderr
    assert "Traceback" not in stderr, stderr[-3000:]
    if usage:  # argparse: its usage (one or more lines), then "<prog>: error: …"
        assert lines and lines[0].startswith("usage:") and ": error: " in lines[-1], stderr
        assert needle in lines[-1], stderr
    else:
        assert len(lines) == 1 and lines[0].startswith("error:"), stderr
        assert needle in lines[0], stderr
    assert seconds < MAX_SECONDS, f"{seconds:.0f} s: something started before the input was checked"


@pytest.fixture(autouse=True)
def _no_token(monkeypatch):
    monkeypatch.delenv("ESPER_TAMIYO_TOKEN", raising=False)  # the serving scripts would read one from the shell


@pytest.fixture
def text_agent(tmp_path) -> Path:
    path = tmp_path / "agent.pt"
    path.write_text("not an agent\n")
    return path


@pytest.mark.parametrize("case", list(BAD_WORLDS))
@pytest.mark.parametrize("script", WORLD_SCRIPTS)
def test_a_bad_world_is_one_line(script, case, tmp_path):
    args, needle = BAD_WORLDS[case]
    extra = ["--out", str(tmp_path / "out")] if script == "bench_pretrain" else []
    _assert_one_line(*_run(script, *args, *extra), needle)


@pytest.mark.parametrize("script,flag", [("serve_tamiyo", "--agent"), ("bench_serve", "--agent"),
                                         ("remote_training", "--check-against")])
def test_a_file_that_is_not_an_agent_is_one_line(script, flag, text_agent, tmp_path):
    _assert_one_line(*_run(script, flag, str(text_agent)), "not an agent.pt")
    _assert_one_line(*_run(script, flag, str(tmp_path / "missing.pt")), "agent file not found")


@pytest.mark.parametrize("script,args,needle,usage", [
    ("screenshot_dashboards", [], "--tensorboard LOGDIR and/or --ray-dashboard", False),
    ("screenshot_dashboards", ["--tensorboard", "/nonexistent/runs"], "is not a folder", False),
    ("bench_wrap", ["--points", "layer9"], "layer9", False),
    ("bench_wrap", ["--repeats", "2"], "--repeats must be ≥ 5", True),
    ("bench_dormant", ["--repeats", "2"], "--repeats must be ≥ 5", True),
    ("bench_counterfactual", ["--blueprint", "warp_drive"], "warp_drive", True),
    ("bench_pretrain", [], "--out is required", True),
    ("serve_tamiyo", ["--agent", "docs/data/agents/tamiyo_smoke_attempt7.pt", "--reload"], "--address", False),
    ("serve_tamiyo", ["--agent", "docs/data/agents/tamiyo_smoke_attempt7.pt", "--host", "0.0.0.0"], "token", False),
])
def test_other_bad_flags_are_one_line(script, args, needle, usage, tmp_path):
    _assert_one_line(*_run(script, *args), needle, usage)


def test_a_demo_world_without_a_cnn_host_is_one_line():
    _assert_one_line(*_run("demo_plane", "--set", "world.host={name: transformer}"), "world.host.name")
