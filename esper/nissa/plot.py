"""A run's telemetry as a picture: its metric over epochs, each seed's lifecycle per slot, parameters over time."""

from __future__ import annotations

from pathlib import Path

STAGE_COLOURS = {
    "GERMINATED": "#c7e9c0", "TRAINING": "#74c476", "BLENDING": "#fdae6b", "HOLDING": "#fd8d3c",
    "FOSSILIZED": "#6baed6", "WITHERING": "#9e9ac8", "CULLED": "#de2d26", "EMBARGOED": "#fcbba1",
    "RESETTING": "#d9d9d9",
}


def _spans(events, last_epoch: int) -> dict[str, list[tuple[str, float, float]]]:
    """Per slot: (stage, start, end) from stage-change events (DORMANT spans are left blank)."""
    spans: dict[str, list[tuple[str, float, float]]] = {}
    changes = events[events["kind"] == "stage_change"].sort_values("epoch", kind="stable")
    for slot, rows in changes.groupby("slot", sort=True):
        current, start = None, 0.0
        out = []
        for _, r in rows.iterrows():
            if current not in (None, "DORMANT"):
                out.append((current, start, float(r["epoch"])))
            current, start = r["to_stage"], float(r["epoch"])
        if current not in (None, "DORMANT"):
            out.append((current, start, float(last_epoch)))
        spans[slot] = out
    return spans


def plot_lifecycle(path: Path, out: Path) -> None:
    """One run's telemetry (Parquet) as a picture: the validation metric over epochs (rollbacks marked), each
    slot's lifecycle as coloured spans, the parameter count. ValueError/KeyError if it is not Esper telemetry."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from esper.nissa import read_events

    events = read_events(path)
    epochs = events[events["kind"] == "epoch"].sort_values("epoch")
    if epochs.empty:
        raise ValueError(f"{path}: no epoch events")
    last = int(epochs["epoch"].max())
    spans = _spans(events, last)
    fig, (ax_acc, ax_slots, ax_params) = plt.subplots(3, 1, figsize=(8, 7), sharex=True,
                                                      gridspec_kw={"height_ratios": [3, max(len(spans), 1), 2]})
    metric = "val_metric" if "val_metric" in epochs else "val_accuracy"  # telemetry written before the Task seam
    ax_acc.plot(epochs["epoch"], epochs[metric], marker="o", label="validation metric")
    for _, r in events[events["kind"] == "rollback"].iterrows():
        ax_acc.axvline(r["epoch"], color="red", linestyle="--", label="Governor rollback")
    verdicts = events[(events["kind"] == "audit") & events["verdict"].isin(["cull", "revive"])] \
        if "verdict" in events else events.iloc[:0]
    for _, r in verdicts.iterrows():  # Emrakul's verdicts: a withered fossil culled / revived
        name = f"{r['verdict']} {r['slot']}" if len(verdicts) <= 4 else str(r["verdict"])  # many: one entry per kind
        ax_acc.axvline(r["epoch"], color="#de2d26" if r["verdict"] == "cull" else "#6baed6", linestyle=":",
                       label=f"{name} (audit)")
    ax_acc.set_ylabel("validation metric")
    handles, labels = ax_acc.get_legend_handles_labels()
    unique = dict(zip(labels, handles))  # a label drawn many times is listed once
    ax_acc.legend(unique.values(), unique.keys(), loc="lower right")
    for i, (slot, rows) in enumerate(sorted(spans.items())):
        for stage, start, end in rows:
            ax_slots.barh(i, max(end - start, 0.15), left=start, color=STAGE_COLOURS.get(stage, "grey"), edgecolor="black", linewidth=0.3)
    ax_slots.set_yticks(range(len(spans)), sorted(spans))
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in STAGE_COLOURS.values()]
    ax_slots.legend(handles, STAGE_COLOURS.keys(), fontsize=6, ncol=4, loc="upper left")
    ax_slots.set_ylabel("slot lifecycle")
    total = epochs["params_host"] + epochs["params_active"] + epochs["params_fossilized"]
    ax_params.step(epochs["epoch"], total, where="post", label="total")
    ax_params.step(epochs["epoch"], epochs["params_host"], where="post", label="host", linestyle=":")
    ax_params.set_ylabel("parameters")
    ax_params.set_xlabel("epoch")
    ax_params.legend(loc="lower right")
    run = events.iloc[0]
    fig.suptitle(f"{path.stem}  ({', '.join(f'{c[4:]}={run[c]}' for c in events.columns if c.startswith('run_'))})")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
