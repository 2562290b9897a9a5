"""The ImageNet results the paper sets the network against (Krizhevsky et al. 2012, section 6).

Top-1 / top-5 error in percent; ``None`` where the paper gives no figure.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperRow:
    """One row of the paper's Table 1 or Table 2."""

    table: str
    system: str
    year: int
    split: str
    top1_err: float | None
    top5_err: float | None
    hand_crafted: bool


PAPER_ROWS = (
    # Table 1: ILSVRC-2010 test set.
    PaperRow("Table 1", "Sparse coding (ILSVRC-2010 winner)", 2010, "ILSVRC-2010 test", 47.1, 28.2, True),
    PaperRow("Table 1", "SIFT + Fisher vectors (Sanchez & Perronnin 2011)", 2011, "ILSVRC-2010 test", 45.7, 25.7, True),
    PaperRow("Table 1", "CNN (AlexNet)", 2012, "ILSVRC-2010 test", 37.5, 17.0, False),
    # Table 2: ILSVRC-2012 (the runner-up's SIFT/LBP/GIST/CSIFT + FVs; the paper's nets).
    PaperRow("Table 2", "SIFT + FVs (ILSVRC-2012 runner-up)", 2012, "ILSVRC-2012 test", None, 26.2, True),
    PaperRow("Table 2", "1 CNN", 2012, "ILSVRC-2012 val", 40.7, 18.2, False),
    PaperRow("Table 2", "5 CNNs", 2012, "ILSVRC-2012 val", 38.1, 16.4, False),
    PaperRow("Table 2", "7 CNNs* (2 pre-trained on Fall 2011)", 2012, "ILSVRC-2012 test", None, 15.3, False),
)
