"""``alexnet prepare SOURCE OUT``: convert a dataset as you have it (official ILSVRC-2012 tars,
the Kaggle download, a class-folder tree, MNIST-format files, CIFAR) into random-access
WebDataset shards of SIZE x SIZE images with a manifest, split indexes and training-set
statistics. Parallel, with a progress bar; killed and run again with the same arguments, it
finishes only the missing work. Files that cannot be used are skipped and listed in
OUT/manifest.json with the reason. See docs/prepare.md."""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import sys
from collections.abc import Iterator

from alexnet.cli.common import positive_int, show_progress
from alexnet.data.prepare import LAYOUTS, Settings, default_workers, prepare


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {value}")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="convert a dataset into prepared shards (resumable)", description=__doc__)
    p.add_argument("source", metavar="SOURCE", help="folder holding the dataset (or a CIFAR tarball)")
    p.add_argument("out", metavar="OUT", help="output folder (new, or a previous run's to resume it)")
    p.add_argument("--layout", choices=("auto",) + LAYOUTS, default="auto", help="layout of SOURCE (default: detect)")
    p.add_argument(
        "--size", type=positive_int, default=256, help="side of the stored square images (default 256, the paper's)"
    )
    p.add_argument(
        "--workers", type=positive_int, default=None, help=f"processes (default: all cores, here {default_workers()})"
    )
    p.add_argument(
        "--val-fraction", type=_fraction, default=None, metavar="F",
        help="single class-folder tree only: fraction of each class held out as val (default 0.1)",
    )  # fmt: skip
    p.add_argument(
        "--encoding", choices=("jpeg", "raw"), default="jpeg", help="jpeg (default) or raw uint8 pixels (.npy)"
    )
    p.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    p.add_argument(
        "--channels", type=int, choices=(1, 3), default=3,
        help="3: RGB (default; grey images replicated), 1: grey (ITU-R 601 luma), for grayscale models",
    )  # fmt: skip
    p.add_argument("--shard-size", type=positive_int, default=1000, help="samples per shard (default 1000)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _human(seconds: float) -> str:
    s = round(seconds)
    return (
        f"{s // 3600}h{s // 60 % 60:02d}m"
        if s >= 3600
        else f"{s // 60}m{s % 60:02d}s"
        if s >= 60
        else f"{seconds:.1f}s"
    )


_SHOWN_SKIPS = 5  # skipped inputs named in the summary; the manifest lists them all


class _Stopped(Exception):
    def __init__(self, signum: int) -> None:
        self.signum = signum


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """SIGTERM stops the run like Ctrl-C: the shards finished so far stay, the one being written
    is discarded (see alexnet.data.prepare.run), and the command says how to resume."""
    pid = os.getpid()

    def handler(signum: int, _frame: object) -> None:
        if os.getpid() == pid:  # not in a forked worker that has not reset its handlers yet
            raise _Stopped(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(args: argparse.Namespace) -> int:
    settings = Settings(size=args.size, encoding=args.encoding, quality=args.quality, shard_size=args.shard_size,
                        channels=args.channels)  # fmt: skip
    try:
        with _stop_on_sigterm():
            result = prepare(
                args.source, args.out, layout=args.layout, settings=settings, workers=args.workers,
                val_fraction=args.val_fraction, progress=show_progress(args),
                log=lambda msg: print(msg, file=sys.stderr),
            )  # fmt: skip
    except (_Stopped, KeyboardInterrupt) as e:
        signum = e.signum if isinstance(e, _Stopped) else signal.SIGINT
        again = shlex.join(["alexnet", "prepare", args.source, args.out])
        print(f"\nalexnet: stopped by {signal.Signals(signum).name}; the finished shards are kept in {args.out}; "
              f"resume with the same command ({again} and the same options)", file=sys.stderr)  # fmt: skip
        return 128 + signum
    m = result.manifest
    print(f"layout {m['source']['layout']} ({m['name']}), {len(m['classes'])} classes; " + "; ".join(result.notes))
    total_skipped = 0
    for split in ("train", "val"):
        s = m["splits"][split]
        total_skipped += len(s["skipped"])
        print(f"{split}: {s['count']:,} images stored, {len(s['skipped']):,} skipped, in {len(s['shards'])} shards")
    if result.up_to_date:
        print(f"{args.out} is already prepared with these inputs and settings; nothing to do")
    else:
        rate = result.converted / result.seconds if result.seconds > 0 else 0.0
        done = f"{result.converted:,} images converted, {rate:,.0f} images/s"
        print(f"wrote {args.out} in {_human(result.seconds)} ({done})")
    if total_skipped:
        print(f"{total_skipped:,} input files were skipped; each is listed with its reason in {args.out}/manifest.json "
              f"(alexnet data show {args.out})")  # fmt: skip
        shown = [s for split in ("train", "val") for s in m["splits"][split]["skipped"]][:_SHOWN_SKIPS]
        for s in shown:  # name the first few here: a FIFO or a symlink loop should not need a second command
            print(f"  skipped {s['file']}: {s['reason']}")
        if total_skipped > len(shown):
            print(f"  ... and {total_skipped - len(shown):,} more")
    return 0
