"""Reading a dataset written by ``alexnet prepare`` (see :mod:`alexnet.data.prepare.manifest`).

The split index gives, for sample *i*, its shard, the byte offset and length of its image in
that shard, and its label; reading a sample is one ``pread`` and one decode.

**Shuffling.** A training epoch visits the samples in a uniformly random permutation keyed by
(seed, epoch) (:class:`~alexnet.data.dataset.BatchPlan`): the paper's full shuffle, not the
"shuffle the shards, then a shuffle buffer" approximation of streaming loaders, which with
class-ordered shards mixes only a few classes per batch. It costs random reads of ~25 KiB and
gives exact mid-epoch resume and exact splits over ranks (``docs/pipeline.md``, "Shuffling").

**Ranks and workers.** Each rank reads its own share of every global batch (contiguous shares
in training, which drops the last incomplete global batch: fewer than one global batch of
samples, a different set each epoch, goes unseen in an epoch; round-robin in evaluation, which
keeps every sample exactly once and pads nothing). Within a rank, loader thread ``w`` of
``workers`` reads batches ``w, w + workers, ...`` (:func:`ordered_parallel_map`). So the parts
are disjoint and together cover the epoch; ``tests/test_pipeline.py`` checks it.

**Decoding.** ``torchvision.io.decode_jpeg`` in threads (it releases the GIL), each thread's
torch ops without intra-op parallelism (:func:`~alexnet.data.presets.single_threaded_ops`);
batches keep the decoder's ``H,W,C`` layout (channels_last). Why these choices, with the
measurements behind them: ``docs/pipeline.md``.

**On a GPU.** Batches are assembled in pinned memory when CUDA is available, so the copy to
the device is asynchronous; crops, flips, normalisation and colour noise then run on the GPU
(:class:`~alexnet.data.pipeline.InputPipeline`). With ``decode_device="cuda"`` the threads only
read bytes and ``torchvision.io.decode_jpeg(list_of_tensors, device="cuda")`` decodes each
batch with nvJPEG in the consuming thread (on its current stream).
"""

from __future__ import annotations

import os
import queue
import threading
import tokenize
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from alexnet.data.dataset import SPLITS, BatchPlan, Dataset, DatasetInfo
from alexnet.data.prepare import manifest as mf
from alexnet.data.presets import ColourStats, TrainAugment, single_threaded_ops
from alexnet.errors import UserError


def crop_for(size: int) -> int:
    """Training/evaluation crop for stored images of side ``size``: 227 of 256 as in the paper,
    the same proportion otherwise."""
    return 227 if size == 256 else max(1, round(size * 227 / 256))


DECODE_DEVICES = ("cpu", "cuda")


def _jpeg(channels: int = 3):
    """torchvision's decoder and the read mode of ``channels`` (imported late: the raw encoding does not need it)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    return decode_jpeg, ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY


def decode_images(
    blobs: Sequence[bytes],
    encoding: str,
    size: int,
    device: str | torch.device = "cpu",
    out: torch.Tensor | None = None,
    channels: int = 3,
) -> torch.Tensor:
    """uint8 ``N,C,size,size`` tensor (channels_last storage) from the stored bytes of ``N`` samples
    (``C = channels``: 3, or 1 for grey datasets).

    JPEGs are decoded with ``torchvision.io.decode_jpeg`` (libjpeg-turbo; nvJPEG, batched, when
    ``device`` is CUDA). Its CPU output is already ``H,W,C`` in memory, so the batch is kept in
    that layout (a plain copy per image; the NCHW-contiguous stack cost 40% of the decode time).
    ``out`` (CPU, ``N,size,size,C``) receives the images when given (e.g. pinned memory).
    """
    device = torch.device(device)
    if out is None and (device.type == "cpu" or encoding == "raw"):
        out = torch.empty((len(blobs), size, size, channels), dtype=torch.uint8)
    if not blobs:
        return torch.empty((0, size, size, channels), dtype=torch.uint8, device=device).permute(0, 3, 1, 2)
    if encoding == "raw":
        count = size * size * channels
        with single_threaded_ops():
            for i, b in enumerate(blobs):
                if len(b) < count:  # a damaged index: fewer bytes than one image
                    raise UserError(f"a stored image has {len(b)} bytes, not {count}; prepare the dataset again")
                out[i].view(-1).copy_(torch.frombuffer(b, dtype=torch.uint8, count=count, offset=len(b) - count))
        return out.to(device).permute(0, 3, 1, 2)
    decode_jpeg, mode = _jpeg(channels)
    tensors = [torch.frombuffer(b, dtype=torch.uint8) for b in blobs]
    with warnings.catch_warnings():  # torchvision 0.29 announces a move to TorchCodec; the decoder works
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            images = decode_jpeg(tensors, mode=mode, device=device)
        except RuntimeError as e:
            reason = str(e).splitlines()[0]
            raise UserError(f"a stored image cannot be decoded ({reason}); prepare the dataset again") from None
    if device.type != "cpu":
        return torch.stack(images).contiguous(memory_format=torch.channels_last)
    with single_threaded_ops():  # image-sized copies: an OpenMP team per copy costs more than the copy
        for i, image in enumerate(images):
            out[i].copy_(image.permute(1, 2, 0))
    return out.permute(0, 3, 1, 2)


class _ShardFiles:
    """Open shard files by number and ``pread`` from them.

    Each reading thread passes its own descriptor cache (``pread`` on a shared descriptor is safe,
    but closing one another thread still uses is not); the calling thread's is ``self.fds``.
    """

    MAX_OPEN = 64

    def __init__(self, root: Path, names: list[str]) -> None:
        self.root, self.names = root, names
        self.fds: dict[int, int] = {}
        self.pid = os.getpid()

    def read(self, shard: int, offset: int, length: int, fds: dict[int, int] | None = None) -> bytearray:
        if self.pid != os.getpid():  # forked into another process: own descriptors
            self.fds, self.pid = {}, os.getpid()
        if fds is None:
            fds = self.fds
        fd = fds.get(shard)
        if fd is None:
            if len(fds) >= self.MAX_OPEN:
                os.close(fds.pop(next(iter(fds))))
            try:
                fd = fds[shard] = os.open(self.root / self.names[shard], os.O_RDONLY)
            except OSError as e:
                raise UserError(
                    f"cannot open shard {self.names[shard]} of {self.root} ({e.strerror}); prepare it again"
                ) from None
        data = bytearray(length)  # writable, so torch.frombuffer takes it without a copy or a warning
        if os.preadv(fd, [data], offset) != length:
            raise UserError(
                f"shard {self.names[shard]} of {self.root} is shorter than its index says; prepare it again"
            )
        return data

    @staticmethod
    def close(fds: dict[int, int]) -> None:
        while fds:
            os.close(fds.popitem()[1])

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root, "names": self.names, "fds": {}, "pid": -1}


T = TypeVar("T")
R = TypeVar("R")


def ordered_parallel_map(
    fn: Callable[[T, dict[int, int]], R], items: Sequence[T], workers: int, prefetch: int = 2
) -> Iterator[R]:
    """``fn(item, fds)`` for every item, in order, computed ahead by ``workers`` threads.

    Worker ``w`` computes items ``w, w + workers, w + 2*workers, ...`` (the assignment
    ``torch.utils.data.DataLoader`` uses), at most ``prefetch`` ahead of the consumer; each
    worker has its own descriptor cache ``fds``, closed when it stops, and runs its torch ops
    single-threaded. An exception in a worker is raised in the consumer at that item's turn.
    Stopping early (``break``, an exception, garbage collection) stops the workers.
    """
    queues: list[queue.Queue[tuple[bool, Any]]] = [queue.Queue(maxsize=prefetch) for _ in range(workers)]
    stop = threading.Event()

    def work(w: int) -> None:
        fds: dict[int, int] = {}
        try:
            with single_threaded_ops():
                for k in range(w, len(items), workers):
                    if stop.is_set():
                        return
                    try:
                        result: tuple[bool, Any] = (True, fn(items[k], fds))
                    except BaseException as e:  # noqa: BLE001 - handed to the consumer
                        result = (False, e)
                    while not stop.is_set():
                        try:
                            queues[w].put(result, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if not result[0]:
                        return
        finally:
            _ShardFiles.close(fds)

    threads = [
        threading.Thread(target=work, args=(w,), name=f"alexnet-loader-{w}", daemon=True) for w in range(workers)
    ]
    for t in threads:
        t.start()
    try:
        for k in range(len(items)):
            w = k % workers
            while True:
                try:
                    ok, value = queues[w].get(timeout=1.0)
                    break
                except queue.Empty:
                    if not threads[w].is_alive() and queues[w].empty():
                        raise RuntimeError(f"loader thread {w} stopped without a result") from None
            if not ok:
                raise value
            yield value
    finally:
        stop.set()
        for t in threads:
            t.join()


def _load_array(path: Path) -> np.ndarray:
    """One ``.npy`` array (never pickled objects); a one-line :class:`UserError` otherwise."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, SyntaxError, tokenize.TokenError) as e:  # numpy tokenizes the header
        raise UserError(f"{path.parent}: cannot read {path.name} ({e}); prepare the dataset again") from None
    if not isinstance(array, np.ndarray):  # an .npz archive under an .npy name
        raise UserError(f"{path.parent}: {path.name} is not one array; prepare the dataset again")
    return array


def _index_in_range(index: np.ndarray, shard_sizes: np.ndarray, classes: int) -> bool:
    """Every row names an existing shard, a byte range inside that file, and a class."""
    if len(index) == 0:
        return True
    shard, offset, length, label = (index[:, k] for k in range(4))
    if not ((shard >= 0).all() and (shard < len(shard_sizes)).all() and (label >= 0).all() and (label < classes).all()):
        return False
    return bool((offset >= 0).all() and (length > 0).all() and (offset + length <= shard_sizes[shard]).all())


class PreparedDataset(Dataset):
    """A prepared dataset folder as a :class:`~alexnet.data.dataset.Dataset`.

    Attributes beyond the interface: ``root``, ``manifest``, ``workers`` (decoding threads used
    by :meth:`batches`; 0 decodes in the calling thread), ``decode_device`` (``cpu``, or
    ``cuda``/``cuda:N`` to decode JPEG batches on the GPU with nvJPEG: the threads then only read
    bytes and batches arrive on that device), ``pin_memory`` (CPU batches in page-locked memory,
    for asynchronous copies to a GPU; default: when CUDA is available), ``prefetch`` (batches
    each thread decodes ahead),
    ``mean_image`` (float32 ``3,S,S``, 0-255 units, or None), ``eigenvalues`` (3) and
    ``eigenvectors`` (3x3, columns) of the RGB covariance for PCA colour augmentation (or None),
    ``keys(split)``.
    """

    def __init__(
        self,
        root: str | Path,
        workers: int = 0,
        decode_device: str = "cpu",
        pin_memory: bool | None = None,
        prefetch: int = 2,
    ) -> None:
        """``pin_memory``: ``None`` pins when CUDA is available."""
        self.root = Path(root)
        self.manifest = mf.read_manifest(self.root)
        self.workers, self.prefetch = workers, prefetch
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        try:
            kind = torch.device(decode_device).type
        except RuntimeError:
            kind = str(decode_device)
        if kind not in DECODE_DEVICES:
            raise UserError(f"cannot decode on {decode_device!r}; use one of {', '.join(DECODE_DEVICES)}")
        if kind == "cuda" and not torch.cuda.is_available():
            raise UserError("GPU decoding needs a CUDA GPU and none is available; decode on the CPU")
        self.decode_device = decode_device
        m = self.manifest
        self.size = int(m["image_size"])
        self.channels = mf.channels(m)
        self.encoding = str(m["encoding"])
        self._index: dict[str, np.ndarray] = {}
        self._files: dict[str, _ShardFiles] = {}
        for split in SPLITS:
            entry = m["splits"][split]
            index = _load_array(self.root / entry["index"])
            if index.dtype.kind not in "iu" or index.ndim != 2 or index.shape[1] != len(mf.INDEX_COLUMNS) \
                    or len(index) != entry["count"] or (index.size and index.max() >= 2**62):
                raise UserError(f"{self.root}: {entry['index']} does not match the manifest; prepare the dataset again")
            index = index.astype(np.int64, copy=False)
            if not _index_in_range(index, self._shard_sizes(entry["shards"]), len(m["classes"])):
                raise UserError(f"{self.root}: {entry['index']} points outside its shards or classes; "
                                "prepare the dataset again")  # fmt: skip
            self._index[split] = index
            self._files[split] = _ShardFiles(self.root, list(entry["shards"]))
        stats = m.get("statistics")
        if stats:
            mean, std = tuple(stats["mean"]), tuple(stats["std"])
            rgb = self.channels == 3  # grey datasets have no colour eigenpairs (no PCA colour noise)
            self.eigenvalues = torch.tensor(stats["eigenvalues"], dtype=torch.float64) if rgb else None
            self.eigenvectors = torch.tensor(stats["eigenvectors"], dtype=torch.float64) if rgb else None
            image = _load_array(self.root / stats["mean_image"])
            if image.shape != (self.size, self.size, self.channels) or image.dtype.kind != "f":
                raise UserError(f"{self.root}: {stats['mean_image']} is not a {self.size}x{self.size}x{self.channels} "
                                "mean image; prepare the dataset again")  # fmt: skip
            self.mean_image: torch.Tensor | None = torch.from_numpy(image).permute(2, 0, 1).contiguous()
        else:  # no training split: neutral normalisation, no PCA statistics
            mean, std = (0.0,) * self.channels, (1.0,) * self.channels
            self.eigenvalues = self.eigenvectors = self.mean_image = None
        classes = tuple(c["name"] for c in m["classes"])
        self.class_ids = tuple(c["id"] for c in m["classes"])
        self.info = DatasetInfo(name=m["name"], classes=classes, channels=self.channels, image_size=self.size,
                                mean=mean, std=std)  # fmt: skip
        crop = crop_for(self.size)
        self.train_augment = TrainAugment(crop=crop, pad=0, flip=True)
        self.eval_crop = crop

    def _shard_sizes(self, names: list[str]) -> np.ndarray:
        sizes = []
        for name in names:
            try:
                sizes.append((self.root / name).stat().st_size)
            except OSError as e:
                raise UserError(f"cannot open shard {name} of {self.root} ({e.strerror}); prepare it again") from None
        return np.array(sizes, dtype=np.int64)

    def num_samples(self, split: str) -> int:
        return len(self._index[split])

    def colour_stats(self) -> ColourStats | None:
        """The manifest's mean image and RGB eigenpairs (computed by ``alexnet prepare``)."""
        if self.mean_image is None:
            return None
        if self.eigenvalues is None:
            return ColourStats(self.mean_image.float())
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
        return bytes(self._files[split].read(shard, offset, length))

    def read(
        self, split: str, indices: torch.Tensor | Sequence[int], fds: dict[int, int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 ``N,C,S,S`` images (channels_last storage) and int64 labels of the samples
        ``indices``, decoded on ``decode_device``."""
        rows, blobs = self._read_blobs(split, indices, fds)
        out = None
        if self.pin_memory and torch.device(self.decode_device).type == "cpu":
            out = torch.empty((len(blobs), self.size, self.size, self.channels), dtype=torch.uint8, pin_memory=True)
        images = decode_images(blobs, self.encoding, self.size, self.decode_device, out, self.channels)
        return images, torch.from_numpy(rows[:, 3].copy())

    def _read_blobs(
        self, split: str, indices: torch.Tensor | Sequence[int], fds: dict[int, int] | None = None
    ) -> tuple[np.ndarray, list[bytearray]]:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        rows = self._index[split][idx]
        files = self._files[split]
        return rows, [files.read(int(s), int(o), int(n), fds) for s, o, n, _ in rows]

    def batches(self, split: str, plan: BatchPlan) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This process's share of every batch of ``plan``, in order (see :class:`BatchPlan`).

        With ``workers > 0``, thread ``w`` reads and decodes batches ``w, w + workers, ...``
        (disjoint shares of the plan, which together are all of it) a few batches ahead.
        Threads, not processes: the decoder releases the GIL, and the batches need no copy
        through shared memory (measurements in ``alexnet bench data`` and docs).
        """
        n = self.num_samples(split)
        on_gpu = torch.device(self.decode_device).type != "cpu"
        if self.workers <= 0:
            for idx in plan.local_indices(n):
                yield self.read(split, idx)
            return
        items = list(plan.local_indices(n))
        if not on_gpu:
            yield from ordered_parallel_map(lambda idx, fds: self.read(split, idx, fds), items, self.workers,
                                            self.prefetch)  # fmt: skip
            return
        # GPU decoding: the threads read bytes; nvJPEG decodes each batch in the consuming thread
        # (on its current CUDA stream), so that batch and training stay ordered on one stream.
        for rows, blobs in ordered_parallel_map(lambda idx, fds: self._read_blobs(split, idx, fds), items,
                                                self.workers, self.prefetch):  # fmt: skip
            images = decode_images(blobs, self.encoding, self.size, self.decode_device, channels=self.channels)
            yield images, torch.from_numpy(rows[:, 3].copy())
