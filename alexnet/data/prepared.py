"""Reading a dataset written by ``alexnet prepare`` (see :mod:`alexnet.data.prepare.manifest`).

The split index gives, for sample *i*, its shard, the byte offset and length of its image in
that shard, and its label; reading a sample is one ``pread`` and one decode. So a training
epoch can visit the samples in any order (the paper's full shuffle, exact mid-epoch resume
from a step number) at the cost of random reads, which SSDs and the page cache serve well.

Decoding uses ``torchvision.io.decode_jpeg`` (libjpeg-turbo, no PIL objects); with
``workers > 0`` a ``torch.utils.data.DataLoader`` decodes whole batches in parallel processes
while keeping the order of :meth:`BatchPlan.local_indices`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alexnet.data.dataset import SPLITS, BatchPlan, Dataset, DatasetInfo
from alexnet.data.prepare import manifest as mf
from alexnet.data.presets import ColourStats, TrainAugment
from alexnet.errors import UserError


def crop_for(size: int) -> int:
    """Training/evaluation crop for stored images of side ``size``: 227 of 256 as in the paper,
    the same proportion otherwise."""
    return 227 if size == 256 else max(1, round(size * 227 / 256))


def decode_images(blobs: Sequence[bytes], encoding: str, size: int) -> torch.Tensor:
    """uint8 ``N,3,size,size`` tensor from the stored bytes of ``N`` samples."""
    if not blobs:
        return torch.zeros((0, 3, size, size), dtype=torch.uint8)
    if encoding == "raw":
        count = size * size * 3
        arrays = [np.frombuffer(b, dtype=np.uint8, count=count, offset=len(b) - count) for b in blobs]
        return torch.from_numpy(np.stack(arrays).reshape(len(blobs), size, size, 3)).permute(0, 3, 1, 2).contiguous()
    from torchvision.io import ImageReadMode, decode_jpeg

    tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
    with warnings.catch_warnings():  # torchvision 0.29 announces a move to TorchCodec; the decoder works
        warnings.simplefilter("ignore", DeprecationWarning)
        images = decode_jpeg(tensors, mode=ImageReadMode.RGB)
    return torch.stack(images)


class _ShardFiles:
    """Open shard files by number, ``pread`` from them; a few descriptors cached per process."""

    def __init__(self, root: Path, names: list[str]) -> None:
        self.root, self.names = root, names
        self.fds: dict[int, int] = {}
        self.pid = os.getpid()

    def read(self, shard: int, offset: int, length: int) -> bytes:
        if self.pid != os.getpid():  # forked into a loader worker: own descriptors
            self.fds, self.pid = {}, os.getpid()
        fd = self.fds.get(shard)
        if fd is None:
            if len(self.fds) >= 64:
                os.close(self.fds.pop(next(iter(self.fds))))
            try:
                fd = self.fds[shard] = os.open(self.root / self.names[shard], os.O_RDONLY)
            except OSError as e:
                raise UserError(
                    f"cannot open shard {self.names[shard]} of {self.root} ({e.strerror}); prepare it again"
                ) from None
        data = os.pread(fd, length, offset)
        if len(data) != length:
            raise UserError(
                f"shard {self.names[shard]} of {self.root} is shorter than its index says; prepare it again"
            )
        return data

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root, "names": self.names, "fds": {}, "pid": -1}


class _BatchReader(torch.utils.data.Dataset):
    """Map-style dataset whose item *i* is the *i*-th batch of a plan (for DataLoader workers)."""

    def __init__(self, ds: PreparedDataset, split: str, batches: list[torch.Tensor]) -> None:
        self.ds, self.split, self.batches = ds, split, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ds.read(self.split, self.batches[i])


class PreparedDataset(Dataset):
    """A prepared dataset folder as a :class:`~alexnet.data.dataset.Dataset`.

    Attributes beyond the interface: ``root``, ``manifest``, ``workers`` (DataLoader processes
    used by :meth:`batches`; 0 decodes in the calling process), ``mean_image`` (float32
    ``3,S,S``, 0-255 units, or None), ``eigenvalues`` (3) and ``eigenvectors`` (3x3, columns)
    of the RGB covariance for PCA colour augmentation (or None), ``keys(split)``.
    """

    def __init__(self, root: str | Path, workers: int = 0) -> None:
        self.root = Path(root)
        self.manifest = mf.read_manifest(self.root)
        self.workers = workers
        m = self.manifest
        self.size = int(m["image_size"])
        self.encoding = str(m["encoding"])
        self._index: dict[str, np.ndarray] = {}
        self._files: dict[str, _ShardFiles] = {}
        for split in SPLITS:
            entry = m["splits"][split]
            try:
                index = np.load(self.root / entry["index"], allow_pickle=False)
            except (OSError, ValueError) as e:
                raise UserError(f"{self.root}: cannot read {entry['index']} ({e}); prepare the dataset again") from None
            if index.ndim != 2 or index.shape[1] != len(mf.INDEX_COLUMNS) or len(index) != entry["count"]:
                raise UserError(f"{self.root}: {entry['index']} does not match the manifest; prepare the dataset again")
            self._index[split] = index
            self._files[split] = _ShardFiles(self.root, list(entry["shards"]))
        stats = m.get("statistics")
        if stats:
            mean, std = tuple(stats["mean"]), tuple(stats["std"])
            self.eigenvalues = torch.tensor(stats["eigenvalues"], dtype=torch.float64)
            self.eigenvectors = torch.tensor(stats["eigenvectors"], dtype=torch.float64)
            image = np.load(self.root / stats["mean_image"], allow_pickle=False)
            self.mean_image: torch.Tensor | None = torch.from_numpy(image).permute(2, 0, 1).contiguous()
        else:  # no training split: neutral normalisation, no PCA statistics
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
            self.eigenvalues = self.eigenvectors = self.mean_image = None
        classes = tuple(c["name"] for c in m["classes"])
        self.class_ids = tuple(c["id"] for c in m["classes"])
        self.info = DatasetInfo(name=m["name"], classes=classes, channels=3, image_size=self.size, mean=mean, std=std)
        crop = crop_for(self.size)
        self.train_augment = TrainAugment(crop=crop, pad=0, flip=True)
        self.eval_crop = crop

    def num_samples(self, split: str) -> int:
        return len(self._index[split])

    def colour_stats(self) -> ColourStats | None:
        """The manifest's mean image and RGB eigenpairs (computed by ``alexnet prepare``)."""
        if self.mean_image is None:
            return None
        return ColourStats(self.mean_image.float(), self.eigenvalues.float(), self.eigenvectors.float())

    def labels(self, split: str) -> torch.Tensor:
        """int64 labels of every sample of ``split``, in index order."""
        return torch.from_numpy(self._index[split][:, 3].copy())

    def keys(self, split: str) -> list[str]:
        """Sample keys of ``split`` in index order (the source file names without extension)."""
        text = (self.root / self.manifest["splits"][split]["keys"]).read_text(encoding="utf-8")
        return text.splitlines()

    def read_bytes(self, split: str, i: int) -> bytes:
        """The stored (encoded) image of sample ``i``."""
        shard, offset, length, _ = (int(v) for v in self._index[split][i])
        return self._files[split].read(shard, offset, length)

    def read(self, split: str, indices: torch.Tensor | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 ``N,3,S,S`` images and int64 labels of the samples ``indices``."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        rows = self._index[split][idx]
        files = self._files[split]
        blobs = [files.read(int(s), int(o), int(n)) for s, o, n, _ in rows]
        return decode_images(blobs, self.encoding, self.size), torch.from_numpy(rows[:, 3].copy())

    def batches(self, split: str, plan: BatchPlan) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.num_samples(split)
        if self.workers <= 0:
            for idx in plan.local_indices(n):
                yield self.read(split, idx)
            return
        reader = _BatchReader(self, split, list(plan.local_indices(n)))
        loader = torch.utils.data.DataLoader(
            reader, batch_size=None, shuffle=False, num_workers=self.workers, prefetch_factor=4
        )
        yield from loader
