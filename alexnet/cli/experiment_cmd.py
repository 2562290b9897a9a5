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
from alexnet.experiments.runner import find_copy_source


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("experiment", help="re-measure one of the paper's claims (resumable)", description=__doc__)
    p.add_argument("name", metavar="NAME", choices=[*EXPERIMENTS, "all"], help=f"{' | '.join(EXPERIMENTS)} | all (every one but "
                   f"{', '.join(n for n, e in EXPERIMENTS.items() if not e.in_all)})")
    p.add_argument("--data", default=DEFAULT_DATA, help=f"data source as for `alexnet train` (default {DEFAULT_DATA})")
    p.add_argument("--seeds", type=positive_int, default=DEFAULT_SEEDS, help=f"seeds per arm (default {DEFAULT_SEEDS})")
    p.add_argument("--budget", choices=BUDGETS, default="quick",
                   help="quick: a training subset and few epochs (<= 10 min each on 2 cores); full: the reported setting")  # fmt: skip
    p.add_argument("--out", default=DEFAULT_OUT, help=f"folder of the runs and results (default {DEFAULT_OUT})")
    p.add_argument("--threshold", type=float_in(0, 1e9, low_open=True), default=None, metavar="X",
                   help="relu-vs-tanh: training-error threshold (fraction); dropout: training-loss threshold")  # fmt: skip
    p.add_argument("--arms", type=lambda text: tuple(a for a in text.split(",") if a), default=None, metavar="A,B",
                   help="train only these arms (the baseline arm among them; default all)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the results as JSON (one object per experiment)")
    p.add_argument("--no-progress", action="store_true", help="no per-step progress bar inside runs")
    p.add_argument("--plan", action="store_true", help="print the runs and their settings; train nothing")
    add_runtime_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
