"""``alexnet experiment NAME|all``: re-measure one of the paper's claims (arms x seeds of ordinary
training runs, then mean +- std, the paper's figure and a seed-noise verdict). Run the same
command again after a kill: finished runs are skipped and the unfinished one resumes exactly. A run
that another experiment under the same --out has already trained (the shared baseline arm) is copied.
The same command in several terminals (e.g. one per GPU: CUDA_VISIBLE_DEVICES=N) shares out the runs."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from alexnet.cli.common import add_runtime_options, float_in, positive_int, show_progress
from alexnet.data import open_dataset
from alexnet.errors import UserError
from alexnet.experiments import (
    BUDGETS,
    DEFAULT_DATA,
    DEFAULT_OUT,
    DEFAULT_SEEDS,
    EXPERIMENTS,
    Plan,
    RunEvent,
    analyse,
    make_plan,
    prepare_data,
    require_colour,
    run_plan,
    run_status,
    to_markdown,
    write_outputs,
)
from alexnet.experiments.curve_report import analyse_curves, curves_markdown, write_curve_outputs
from alexnet.experiments.curve_runner import PointEvent, point_status, run_curve_plan
from alexnet.experiments.runner import find_copy_source
from alexnet.experiments.scaling import CURVE_EXPERIMENTS, CurvePlan, make_curve_plan, parse_sizes, size_name


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("experiment", help="re-measure one of the paper's claims (resumable)", description=__doc__)
    p.add_argument("name", metavar="NAME", choices=[*EXPERIMENTS, *CURVE_EXPERIMENTS, "all"],
                   help=f"{' | '.join(EXPERIMENTS)} | all (every one but {', '.join(n for n, e in EXPERIMENTS.items() if not e.in_all)}); "
                   "learning curves: data-scaling (test error vs images per class, 2011 systems beside the network) | "
                   "transfer (features learned on Fashion-MNIST classes 0-4 reused on 5-9)")  # fmt: skip
    p.add_argument("--data", default=DEFAULT_DATA, help=f"data source as for `alexnet train` (default {DEFAULT_DATA})")
    p.add_argument("--seeds", type=positive_int, default=DEFAULT_SEEDS, help=f"seeds per arm (default {DEFAULT_SEEDS})")
    p.add_argument("--budget", choices=BUDGETS, default="quick",
                   help="quick: a training subset and few epochs (<= 10 min each on 2 cores); full: the reported setting")  # fmt: skip
    p.add_argument("--out", default=DEFAULT_OUT, help=f"folder of the runs and results (default {DEFAULT_OUT})")
    p.add_argument("--threshold", type=float_in(0, 1e9, low_open=True), default=None, metavar="X",
                   help="relu-vs-tanh: training-error threshold (fraction); dropout: training-loss threshold")  # fmt: skip
    p.add_argument("--arms", type=lambda text: tuple(a for a in text.split(",") if a), default=None, metavar="A,B",
                   help="train only these arms (the baseline arm among them; default all)")  # fmt: skip
    p.add_argument("--sizes", type=_sizes, default=None, metavar="N,N,...",
                   help="data-scaling/transfer: training images per class (whole numbers or all; default per budget)")
    p.add_argument("--systems", default=None, metavar="S,S,...",
                   help="data-scaling: hog,hog-rbf,sift-fv,alexnet-small; transfer: scratch,frozen-fc7,fine-tune,hog "
                        "(default per budget)")
    p.add_argument("--json", action="store_true", help="print the results as JSON (one object per experiment)")
    p.add_argument("--no-progress", action="store_true", help="no per-step progress bar inside runs")
    p.add_argument("--plan", action="store_true", help="print the runs and their settings; train nothing")
    add_runtime_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.name in CURVE_EXPERIMENTS:
        return run_curves(args)
    if args.sizes or args.systems:
        raise UserError("--sizes and --systems go with data-scaling and transfer")
    names = [n for n, e in EXPERIMENTS.items() if e.in_all] if args.name == "all" else [args.name]
    if args.arms and args.name == "all":
        raise UserError("--arms picks arms of one experiment; name it instead of all")
    open_dataset(args.data)  # a wrong --data is one line before any plan line or run folder (~1 s)
    outputs = []
    for name in names:
        plan = make_plan(name, args.data, args.seeds, args.budget, args.out, progress=show_progress(args),
                         device=args.device, precision=args.precision, threshold=args.threshold,
                         arms=args.arms)  # fmt: skip
        if plan.experiment.needs_colour:
            try:
                require_colour(plan)
            except UserError as e:
                if args.name != "all":
                    raise
                _say(f"[{name}] skipped: {e}")
                continue
        if args.plan:
            _print_plan(plan)
            continue
        _say(f"[{name}] section {plan.experiment.section}: {len(plan.runs)} runs "
             f"({plan.budget_name}: {plan.budget.describe()}) in {plan.out}")  # fmt: skip
        # The trainer narrates on stdout; here stdout carries only the results (Markdown or JSON).
        with contextlib.redirect_stdout(sys.stderr):
            prepare_data(plan, lambda text, n=name: _say(f"[{n}] {text}"))
            run_plan(plan, on_event=lambda e, n=name: _say(_describe(n, e)))
        result = analyse(plan)
        written = write_outputs(result, plan.out)
        outputs.append(result)
        if not args.json:
            print(to_markdown(result))
            print(f"written: {', '.join(written.values())}")
            if "plot" not in written and name != "ten-crop":
                print("no plot: matplotlib is not installed (pip install 'alexnet[report]')")
    if args.json:
        print(json.dumps(outputs[0] if len(names) == 1 and outputs else outputs))
    return 0


def _sizes(text: str) -> tuple[int | None, ...]:
    try:
        return parse_sizes(text)
    except UserError as e:  # argparse shows an ArgumentTypeError's own message
        raise argparse.ArgumentTypeError(str(e)) from None


def run_curves(args: argparse.Namespace) -> int:
    """``data-scaling`` / ``transfer``: every point, then the analysis and the outputs."""
    from alexnet.experiments.scaling import parse_systems

    if args.arms or args.threshold is not None:
        raise UserError(f"--arms and --threshold are not options of {args.name}; use --systems and --sizes")
    systems = parse_systems(args.systems, args.name) if args.systems is not None else None
    plan = make_curve_plan(args.name, args.data, args.budget, args.out, sizes=args.sizes, systems=systems,
                           seeds=args.seeds, device=args.device, precision=args.precision,
                           progress=show_progress(args))  # fmt: skip
    if args.plan:
        _print_curve_plan(plan)
        return 0
    _say(f"[{plan.name}] {len(plan.sources) + len(plan.points)} runs ({plan.budget_name}: {plan.budget.describe()}) in {plan.out}")
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the results
        run_curve_plan(plan, on_event=lambda e: _say(_describe_point(plan.name, e)))
    result = analyse_curves(plan)
    written = write_curve_outputs(result, plan.out)
    if args.json:
        print(json.dumps(result))
        return 0
    print(curves_markdown(result))
    print(f"written: {', '.join(written.values())}")
    return 0


def _print_curve_plan(plan: CurvePlan) -> None:
    print(f"{plan.name}: {plan.budget_name} ({plan.budget.describe()}), systems {', '.join(plan.systems)}, "
          f"{len(plan.seeds)} seed(s)")  # fmt: skip
    for p in (*plan.sources, *plan.points):
        state = {"new": "to run", "partial": "to resume"}.get(point_status(p), "done")
        print(f"  {p.system:<13} n={size_name(p.n):<5} seed {p.seed}  [{state}]  {p.command()}")


def _describe_point(name: str, e: PointEvent) -> str:
    verb = {"skip": "already finished, skipped", "busy": "another process is running it (waiting for it at the end)",
            "resume": "resuming", "start": "running", "done": "done"}[e.state]  # fmt: skip
    if e.state == "done" and e.seconds is not None:
        verb += f" in {_duration(e.seconds)}"
    return f"[{name}] {e.index + 1}/{e.total}: {e.point.system} n={size_name(e.point.n)} seed {e.point.seed}: {verb}  ({e.point.folder})"


def _print_plan(plan: Plan) -> None:
    print(f"{plan.experiment.name}: {plan.budget_name} ({plan.budget.describe()}), data {plan.runs[0].config.data}")
    for r in plan.runs:
        changes = plan.experiment.arm(r.arm).changes() if r.arm in {a.name for a in plan.experiment.arms} else {}
        state = run_status(r)
        source = find_copy_source(r, plan.out.parent) if state == "new" else None
        state = f"copy of {source}" if source else {"new": "to train", "partial": "to resume"}.get(state, state)
        print(f"  {r.arm:<16} seed {r.seed}  {r.folder}  {json.dumps(changes)}  [{state}]")


def _describe(name: str, e: RunEvent) -> str:
    eta = "ETA after the first run" if e.eta_seconds is None else f"ETA {_duration(e.eta_seconds)}"
    verb = {"skip": "already finished, skipped", "copy": f"the same run finished in {e.source}, copied",
            "busy": "another process is training it (waiting for it at the end)", "resume": "resuming", "start": "training", "done": "done", "eval": f"evaluating ({e.arm})"}[e.state]  # fmt: skip
    arm = "" if e.state == "eval" else f"arm {e.arm} "
    return f"[{name}] run {e.index + 1}/{e.total}: {arm}seed {e.seed}: {verb}  ({eta}; {e.folder})"


def _duration(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
