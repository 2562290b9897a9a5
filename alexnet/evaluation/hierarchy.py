"""How wrong are the mistakes: lowest-common-ancestor heights in a class hierarchy.

The ILSVRC-2012 devkit's ``meta.mat`` holds the WordNet synset tree above the 1000 classes
(``children`` of the 860 inner synsets); ``alexnet prepare`` stores it in the prepared
dataset's manifest (``hierarchy.children``: inner synset id -> child ids, ``hierarchy.names``).

**LCA height** of a predicted and a true class: the number of edges from the further of the
two classes up to their lowest common ancestor. 0 when the prediction is right, 1 for two
siblings, larger for mistakes that land further away in the hierarchy. WordNet is a DAG in
places (a synset may have two parents): the lowest common ancestor is the one that minimises
that height.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Hierarchy:
    """A class hierarchy given by the children of every inner node."""

    children: Mapping[str, Sequence[str]]
    names: Mapping[str, str] = field(default_factory=dict)

    def parents(self) -> dict[str, list[str]]:
        """Node -> its parents."""
        up: dict[str, list[str]] = {}
        for parent, kids in self.children.items():
            for kid in kids:
                up.setdefault(kid, []).append(parent)
        return up

    def ancestors(self, node: str) -> dict[str, int]:
        """Every ancestor of ``node`` (itself included, at 0) with its shortest distance upwards."""
        return _ancestors(node, self.parents())

    def lca_height(self, a: str, b: str) -> int | None:
        """LCA height of ``a`` and ``b`` (see the module docstring); ``None`` if they share no ancestor."""
        da, db = self.ancestors(a), self.ancestors(b)
        common = set(da) & set(db)
        return min((max(da[n], db[n]) for n in common), default=None)

    def mistake_heights(self, classes: Sequence[str], labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        """LCA heights of the top-1 mistakes (``labels != predicted``), in sample order.

        ``classes``: the hierarchy's node id of every label. -1 where two classes share no ancestor.
        """
        up = self.parents()
        cache: dict[int, dict[str, int]] = {}

        def anc(label: int) -> dict[str, int]:
            if label not in cache:
                cache[label] = _ancestors(classes[label], up)
            return cache[label]

        out = []
        for t, p in zip(labels.tolist(), predicted.tolist()):
            if t == p:
                continue
            a, b = anc(t), anc(p)
            out.append(min((max(a[n], b[n]) for n in a.keys() & b.keys()), default=-1))
        return np.asarray(out, dtype=np.int64)

    def to_dict(self) -> dict[str, object]:
        """The JSON form stored in a prepared dataset's manifest."""
        return {"children": {k: list(v) for k, v in self.children.items()}, "names": dict(self.names)}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> Hierarchy:
        children = d.get("children") or {}
        names = d.get("names") or {}
        return cls({str(k): [str(c) for c in v] for k, v in children.items()}, {str(k): str(v) for k, v in names.items()})  # type: ignore[union-attr]


def _ancestors(node: str, up: Mapping[str, Sequence[str]]) -> dict[str, int]:
    dist = {node: 0}
    queue = deque([node])
    while queue:  # breadth first: the first visit of a node is its shortest distance
        n = queue.popleft()
        for p in up.get(n, ()):
            if p not in dist:
                dist[p] = dist[n] + 1
                queue.append(p)
    return dist
