"""A curve experiment's results: the analysis of its finished points, then Markdown, JSON and
a PNG (test error against images per class, CPU seconds and FLOPs, each on log axes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from alexnet.experiments.analysis import summarize
from alexnet.experiments.curve_runner import point_result
from alexnet.experiments.curves import HESTNESS_BETA, crossover_over_seeds, power_law
from alexnet.experiments.report import pyplot, save_figure, write_results
from alexnet.experiments.scaling import HAND_CRAFTED, NETWORK, CurvePlan, size_name

BEST_HAND_CRAFTED = "best hand-crafted"
# transfer: (challenger, incumbent) pairs whose crossover the report gives
TRANSFER_PAIRS = (("scratch", "frozen-fc7"), ("frozen-fc7", "hog"), ("scratch", "hog"), ("fine-tune", "frozen-fc7"))


def analyse_curves(plan: CurvePlan) -> dict[str, Any]:
    """Per system and size: mean +- std over seeds; the crossovers; a power-law fit per system."""
    points = [point_result(p) for p in plan.points]
    by = {(p["system"], p["n"], p["seed"]): p for p in points}
    rows = []
    for system in plan.systems:
        for n in plan.sizes:
            runs = [by[(system, n, s)] for s in plan.seeds]
            rows.append({"system": system, "n": size_name(n), "n_per_class": plan.numeric(n),
                         **{k: summarize([r[k] for r in runs]) for k in ("test_err", "train_err", "cpu_seconds", "flops", "wall_seconds")},
                         "cpu_partial": any(r["cpu_partial"] for r in runs), "command": runs[0]["command"]})  # fmt: skip
    xs = [float(plan.numeric(n)) for n in plan.sizes]

    def curve(system: str, seed: int) -> list[float]:
        return [by[(system, n, seed)]["test_err"] for n in plan.sizes]

    curves = {s: [curve(s, seed) for seed in plan.seeds] for s in plan.systems}
    hand = [s for s in plan.systems if s in HAND_CRAFTED]
    if plan.name == "data-scaling" and hand:
        curves[BEST_HAND_CRAFTED] = [[min(c[i] for c in (curves[h][k] for h in hand)) for i in range(len(xs))]
                                     for k in range(len(plan.seeds))]  # fmt: skip
    pairs = [(NETWORK, BEST_HAND_CRAFTED)] if plan.name == "data-scaling" else list(TRANSFER_PAIRS)
    crossovers = [{"challenger": a, "incumbent": b, **crossover_over_seeds(xs, curves[a], curves[b])}
                  for a, b in pairs if a in curves and b in curves and len(xs) >= 2]  # fmt: skip
    fits = {s: power_law([x for _ in plan.seeds for x in xs], [e for c in curves[s] for e in c]) for s in plan.systems}
    return {"experiment": plan.name, "data": plan.data, "budget": plan.budget_name, "budget_detail": plan.budget.describe(plan.sizes),
            "seeds": len(plan.seeds), "sizes": [size_name(n) for n in plan.sizes], "sizes_numeric": xs,
            "systems": list(plan.systems), "rows": rows, "curves": curves, "crossovers": crossovers, "fits": fits,
            "hestness_beta": HESTNESS_BETA, "points": points}  # fmt: skip


def _pct(s: dict[str, Any]) -> str:
    if s["mean"] is None:
        return "-"
    return f"{s['mean']:.2%}" + (f" ± {s['std']:.2%}" if s["std"] is not None else "")


def _num(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:.3g}{unit}"


def curves_markdown(result: dict[str, Any], plot: str | None = None) -> str:
    """The result table, the crossovers, the fits and the command of every row."""
    lines = [f"### {result['experiment']} ({result['data']})", "",
             (f"Budget {result['budget']}: {result['budget_detail']}; {result['seeds']} seed(s), mean ± sample std "
              "over seeds (seed S draws its own nested subsets: `draw=S`, and trains with `--seed S`)."), "",
             "| system | images/class | test error | train error | CPU s | FLOPs (train) |", "|---|---|---|---|---|---|"]  # fmt: skip
    for r in result["rows"]:
        cpu = _num(r["cpu_seconds"]["mean"]) + (" (≥, resumed)" if r["cpu_partial"] else "")
        lines.append(f"| {r['system']} | {r['n']} | {_pct(r['test_err'])} | {_pct(r['train_err'])} | {cpu} | "
                     f"{_num(r['flops']['mean'])} |")  # fmt: skip
    lines += ["", "Crossovers (log-linear interpolation per seed; mean ± std and 95% t interval of the seeds that cross):", ""]
    for c in result["crossovers"]:
        where = (
            "-" if c["mean"] is None else f"{c['mean']:.0f}" + (f" ± {c['std']:.0f}" if c["std"] is not None else "")
        )
        if c.get("ci95"):
            where += f" (95% CI {max(c['ci95'][0], 0):.0f}-{c['ci95'][1]:.0f})"
        lines.append(
            f"* {c['challenger']} reaches {c['incumbent']} at N = {where} images/class "
            f"({c['crossed']} seed(s) cross, {c['ahead']} ahead from the smallest size, {c['behind']} never; "
            f"ahead at the largest size in {c['ahead_at_largest']} of {len(c['per_seed'])})"
        )
    lines += ["", f"Power-law fits err = a·N^b + c over every seed's point (Hestness et al. 2017: b ≈ {result['hestness_beta']}):",
              "", "| system | a | b ± s.e. | c | RMS residual |", "|---|---|---|---|---|"]  # fmt: skip
    for system, f in result["fits"].items():
        if f is None:
            lines.append(f"| {system} | - | no fit (needs >= 4 sizes) | - | - |")
        else:
            lines.append(
                f"| {system} | {f['a']:.3g} | {f['b']:.3f} ± {f['b_se']:.3f} | {f['c']:.2%} | {f['rms_residual']:.2%} |"
            )
    lines += ["", "Commands (seed 0; other seeds: `draw=S`, `--seed S`, `seed-S`):", ""]
    lines += [f"* {r['system']} at {r['n']}/class: `{r['command']}`" for r in result["rows"]]
    if plot:
        lines += ["", f"![{result['experiment']}]({plot})"]
    return "\n".join(lines) + "\n"


def write_curve_outputs(result: dict[str, Any], folder: str | Path) -> dict[str, str]:
    """``results.json``, ``results.md`` and (with matplotlib) ``curves.png`` in ``folder``."""
    return write_results(result, folder, curves_markdown, draw_curves)


def draw_curves(result: dict[str, Any], path: Path) -> bool:
    """Test error against images per class (with the power-law fits), CPU seconds and FLOPs;
    ``False`` (nothing drawn) without matplotlib."""
    plt = pyplot()
    if plt is None:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for system, colour in zip(result["systems"], colours):
        rows = [r for r in result["rows"] if r["system"] == system and r["test_err"]["mean"] is not None]
        err = [r["test_err"]["mean"] for r in rows]
        std = [r["test_err"]["std"] or 0.0 for r in rows]
        axes[0].errorbar(
            [r["n_per_class"] for r in rows], err, yerr=std, color=colour, marker="o", capsize=3, label=system
        )
        fit = result["fits"].get(system)
        if fit:
            x = np.geomspace(min(result["sizes_numeric"]), max(result["sizes_numeric"]), 50)
            axes[0].plot(x, fit["a"] * x ** fit["b"] + fit["c"], color=colour, linestyle="--", linewidth=1)
        for ax, key in zip(axes[1:], ("cpu_seconds", "flops")):
            xy = [(r[key]["mean"], r["test_err"]["mean"]) for r in rows if r[key]["mean"]]
            if xy:
                ax.plot(*zip(*xy), color=colour, marker="o", label=system)
    labels = ("training images per class", "training CPU seconds", "training FLOPs (baselines: SVM fit only)")
    for ax, label in zip(axes, labels):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("test top-1 error")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    save_figure(fig, path, f"{result['experiment']} ({result['data']}, {result['seeds']} seed(s); dashed: power-law fits)")
    return True
