"""The paper's claims re-measured: plans of ordinary training runs, a resumable runner, the
analysis (threshold crossings, mean +- std over seeds, the seed-noise verdict) and the report
(Markdown, JSON, PNG). ``alexnet experiment`` is the command line; docs/RESULTS.md the record."""

from alexnet.experiments.analysis import analyse, compare, crossing, summarize, verdict
from alexnet.experiments.plans import (
    BUDGETS,
    DEFAULT_DATA,
    DEFAULT_OUT,
    DEFAULT_SEEDS,
    EXPERIMENTS,
    Arm,
    Budget,
    Experiment,
    Plan,
    PlannedRun,
    get_experiment,
    make_plan,
)
from alexnet.experiments.report import to_markdown, write_outputs
from alexnet.experiments.runner import RunEvent, prepare_data, read_metrics, require_colour, run_plan, run_status

__all__ = [
    "BUDGETS", "DEFAULT_DATA", "DEFAULT_OUT", "DEFAULT_SEEDS", "EXPERIMENTS", "Arm", "Budget", "Experiment", "Plan",
    "PlannedRun", "RunEvent", "analyse", "compare", "crossing", "get_experiment", "make_plan", "prepare_data",
    "read_metrics", "require_colour", "run_plan", "run_status", "summarize", "to_markdown", "verdict", "write_outputs",
]  # fmt: skip
