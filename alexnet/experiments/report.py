"""An experiment's results as Markdown, JSON and a PNG plot (matplotlib, optional).

Drawing only: every number comes from :func:`alexnet.experiments.analysis.analyse`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from alexnet.io import atomic_write, atomic_write_json, atomic_write_text

METRIC_LABELS = {
    "val_top1_err": "val top-1 error",
    "train_top1_err": "train top-1 error",
    "train_seconds": "train seconds",
    "epochs_to_threshold": "epochs to threshold",
    "seconds_to_threshold": "seconds to threshold",
    "gap_top1_err": "val - train top-1 error",
    "gap_loss": "val - train loss",
    "steps_to_loss": "steps to train loss",
}
_FRACTIONS = ("val_top1_err", "train_top1_err", "gap_top1_err")


def fmt(metric: str, value: float | None) -> str:
    """A value as the table shows it (errors in %, times in s, counts plain)."""
    if value is None:
        return "-"
    if metric in _FRACTIONS:
        return f"{value:.2%}"
    if "seconds" in metric:
        return f"{value:.1f} s"
    if metric.startswith("steps"):
        return f"{value:.0f}"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def fmt_summary(metric: str, s: dict[str, Any]) -> str:
    """``mean +- std (n)``; the count of runs that did not reach a threshold, if any."""
    if s["mean"] is None:
        text = "not reached" if s["missing"] else "-"
    else:
        text = fmt(metric, s["mean"])
        if s["std"] is not None:
            text += " ± " + fmt(metric, s["std"])
        text += f" (n={s['n']})"
    if s["missing"] and s["mean"] is not None:
        text += f", {s['missing']} not reached"
    return text


def to_markdown(result: dict[str, Any], plot: str | None = None) -> str:
    """The result table: one row per arm, the primary metrics, the paper's figure, the verdicts."""
    primary = result["primary"]
    lines = [
        f"### {result['experiment']} (section {result['section']})",
        "",
        f"Paper: {result['claim']}.",
        "",
        (
            f"Data `{result['data']}`, model `{result['model']}`, budget {result['budget']} "
            f"({result['budget_detail']}), {result['seeds']} seed(s); mean ± sample std over seeds."
        ),
    ]
    if result.get("threshold") is not None:
        what = "training loss" if result["experiment"] == "dropout" else "training top-1 error"
        lines.append(f"Threshold: {what} {result['threshold']:g}.")
    if result.get("note"):
        lines.append(result["note"])
    lines += [
        "",
        "| arm | "
        + " | ".join(METRIC_LABELS[m] for m in primary)
        + " | paper | verdict vs "
        + result["baseline"]
        + " |",
    ]
    lines.append("|---" * (len(primary) + 3) + "|")
    verdicts: dict[str, list[str]] = {}
    for c in result["comparisons"]:
        diff = "-" if c["diff"] is None else ("+" if c["diff"] >= 0 else "") + fmt(c["metric"], c["diff"])
        verdicts.setdefault(c["arm"], []).append(f"{METRIC_LABELS[c['metric']]} {diff}: {c['verdict']}")
    for arm, metrics in result["arms"].items():
        cells = [fmt_summary(m, metrics[m]) for m in primary]
        paper = result["paper"].get(arm, "")
        lines.append(
            f"| {arm} | " + " | ".join(cells) + f" | {paper} | {'; '.join(verdicts.get(arm, ['(baseline)']))} |"
        )
    if result.get("ratio"):
        r = {k: v for k, v in result["ratio"].items() if k != result["baseline"]}
        rs = {k: v for k, v in result["ratio_seconds"].items() if k != result["baseline"]}
        for arm, value in r.items():
            lines.append("")
            lines.append(f"Ratio {arm}/{result['baseline']}: {fmt('x', value)}x in epochs, "
                         f"{fmt('x', rs.get(arm))}x in seconds (paper: ~6x).")  # fmt: skip
    if plot:
        lines += ["", f"![{result['experiment']}]({plot})"]
    return "\n".join(lines) + "\n"


def write_outputs(result: dict[str, Any], folder: str | Path) -> dict[str, str]:
    """``results.json``, ``results.md`` and (when matplotlib is installed) ``curves.png`` in
    ``folder``; returns what was written (``plot`` missing when there is no plot)."""
    return write_results(result, folder, to_markdown, None if result["experiment"] == "ten-crop" else draw_curves)


def write_results(
    result: dict[str, Any],
    folder: str | Path,
    markdown: Callable[[dict[str, Any], str | None], str],
    draw: Callable[[dict[str, Any], Path], bool] | None,
) -> dict[str, str]:
    """Every experiment's outputs: ``curves.png`` when ``draw`` draws one, then ``results.json``
    and ``results.md`` (which links the plot when there is one); returns the paths written."""
    folder = Path(folder)
    written = {"json": str(folder / "results.json"), "markdown": str(folder / "results.md")}
    plot = folder / "curves.png"
    if draw is not None and draw(result, plot):
        written["plot"] = str(plot)
    atomic_write_json(folder / "results.json", result)
    atomic_write_text(folder / "results.md", markdown(result, plot.name if "plot" in written else None))
    return written


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend, or ``None`` when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_figure(fig: Any, path: Path, title: str) -> None:
    """Title, lay out, write atomically as PNG and close ``fig``."""
    import matplotlib.pyplot as plt

    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)


def draw_curves(result: dict[str, Any], path: Path) -> bool:
    """Training error per epoch of every run, by arm (log scale, as Figure 1), beside the
    validation error; ``False`` (nothing drawn) when matplotlib is not installed."""
    plt = pyplot()
    if plt is None:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (arm, runs), colour in zip(result["curves"].items(), colours):
        for i, run in enumerate(runs):
            epochs = [p["epoch"] for p in run]
            for ax, key in zip(axes, ("train_top1_err", "val_top1_err")):
                ax.plot(epochs, [p[key] for p in run], color=colour, alpha=0.8, label=arm if i == 0 else None)
    if result.get("threshold") is not None and result["experiment"] != "dropout":
        axes[0].axhline(result["threshold"], color="grey", linestyle="--", linewidth=1, label="threshold")
    for ax, title in zip(axes, ("training error (during training)", "validation error")):
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    save_figure(fig, path, f"{result['experiment']} ({result['data']}, {result['seeds']} seed(s), one line per run)")
    return True
