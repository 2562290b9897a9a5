"""Bounded fuzzing (hypothesis, fixed examples, derandomized so CI sees the same inputs): the
IDX parser, the prepared-dataset manifest and index reader, and image decoding. Whatever the
bytes, the result is the data or a clear error (UserError / ConversionError), never another
exception. (The checkpoint loader has its own fuzz test beside the checkpoint tests.)"""

from __future__ import annotations

import gzip
import io
import json
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from alexnet.data.idx import read_idx
from alexnet.data.prepare import Settings, prepare
from alexnet.data.prepare.convert import ConversionError, model_pixels, to_pixels
from alexnet.data.prepared import PreparedDataset
from alexnet.errors import UserError

# A fixed budget: the three targets together stay within a few seconds of CPU.
FUZZ = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip


def mutations() -> st.SearchStrategy[list[tuple[int, int]]]:
    """(position, new byte) pairs; positions are taken modulo the length."""
    return st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), max_size=8)


def mutate(data: bytes, changes: list[tuple[int, int]], cut: int | None) -> bytes:
    buf = bytearray(data)
    for pos, value in changes:
        if buf:
            buf[pos % len(buf)] = value
    return bytes(buf[:cut] if cut is not None else buf)


# --------------------------------------------------------------------------- IDX


@st.composite
def idx_files(draw: st.DrawFn) -> bytes:
    """Mostly well-formed headers (any type code, 0-4 dimensions of any size) with a payload of
    any length, sometimes gzipped or mutated; sometimes arbitrary bytes."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=64))
    ndim = draw(st.integers(0, 4))
    dims = draw(st.lists(st.one_of(st.integers(0, 6), st.integers(0, 2**32 - 1)), min_size=ndim, max_size=ndim))
    code = draw(st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0xFF]))
    payload = draw(st.binary(max_size=300))
    data = bytes([0, 0, code, ndim]) + struct.pack(f">{ndim}I", *dims) + payload
    data = mutate(data, draw(mutations()), draw(st.one_of(st.none(), st.integers(0, 40))))
    return gzip.compress(data) if draw(st.booleans()) else data


@FUZZ
@given(data=idx_files())
def test_idx_parser_gives_an_array_or_a_clear_error(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x-idx3-ubyte"
        path.write_bytes(data)
        try:
            array = read_idx(path)
        except UserError as e:
            assert str(path) in str(e) and "\n" not in str(e)
            return
    header = 4 + 4 * array.ndim
    raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    assert array.nbytes == len(raw) - header  # a success is exactly what the header promised


# --------------------------------------------------------------------------- manifest and index


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("fuzz-src")
    for c in ("a", "b"):
        (src / c).mkdir()
        for i in range(5):
            Image.effect_noise((24, 24), 20 + i).convert("RGB").save(src / c / f"{i}.png")
    out = tmp_path_factory.mktemp("fuzz") / "out"
    prepare(src, out, settings=Settings(size=16, shard_size=4), workers=1, val_fraction=0.3, progress=False)
    return out


def damage(value: Any, draw: st.DrawFn, depth: int = 0) -> Any:
    """``value`` with one field somewhere replaced, removed or retyped."""
    junk = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), st.text(max_size=5),
                     st.just([]), st.just({}), st.just("../../etc/passwd"))  # fmt: skip
    if isinstance(value, dict) and value and depth < 4 and draw(st.integers(0, 3)):
        key = draw(st.sampled_from(sorted(value)))
        out = dict(value)
        if draw(st.integers(0, 5)) == 0:
            del out[key]
        else:
            out[key] = damage(value[key], draw, depth + 1)
        return out
    if isinstance(value, list) and value and depth < 4 and draw(st.integers(0, 3)):
        i = draw(st.integers(0, len(value) - 1))
        return value[:i] + [damage(value[i], draw, depth + 1)] + value[i + 1 :]
    return draw(junk)


@st.composite
def damaged_datasets(draw: st.DrawFn, manifest: dict[str, Any], index: np.ndarray) -> tuple[bytes, bytes]:
    """(manifest.json bytes, train.index.npy bytes) with one or both damaged."""
    text = json.dumps(damage(manifest, draw)) if draw(st.booleans()) else json.dumps(manifest)
    raw = text.encode()
    if draw(st.integers(0, 4)) == 0:
        raw = mutate(raw, draw(mutations()), draw(st.one_of(st.none(), st.integers(0, len(raw)))))
    buf = io.BytesIO()
    changed = index.copy()
    if draw(st.booleans()) and changed.size:
        flat = changed.reshape(-1)
        flat[draw(st.integers(0, flat.size - 1))] = draw(st.integers(-(2**40), 2**40))
    np.save(buf, changed if draw(st.integers(0, 5)) else changed.astype(draw(st.sampled_from(["f4", "u1", "i2"]))))
    npy = buf.getvalue()
    if draw(st.integers(0, 4)) == 0:
        npy = mutate(npy, draw(mutations()), draw(st.one_of(st.none(), st.integers(0, len(npy)))))
    return raw, npy


def test_manifest_and_index_reader_gives_a_dataset_or_a_clear_error(prepared: Path, tmp_path: Path) -> None:
    manifest = json.loads((prepared / "manifest.json").read_text())
    index = np.load(prepared / "train.index.npy")
    copy = tmp_path / "copy"
    copy.mkdir()
    for p in prepared.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())

    @FUZZ
    @given(case=damaged_datasets(manifest, index))
    def check(case: tuple[bytes, bytes]) -> None:
        (copy / "manifest.json").write_bytes(case[0])
        (copy / "train.index.npy").write_bytes(case[1])
        try:
            ds = PreparedDataset(copy)
        except UserError as e:
            assert "\n" not in str(e)
            return
        for split in ("train", "val"):  # what opened must read: every sample, decoded or a clear error
            for i in range(ds.num_samples(split)):
                try:
                    ds.read(split, [i])
                except UserError:
                    pass

    check()


# --------------------------------------------------------------------------- image decoding


def encoded_samples() -> list[bytes]:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 17, 3), dtype=np.uint8), "RGB")
    out = []
    for img, fmt, kw in [(rgb, "JPEG", {"quality": 80}), (rgb.convert("RGBA"), "PNG", {}), (rgb.convert("P"), "GIF", {}),
                         (rgb.convert("L"), "BMP", {}), (rgb.convert("CMYK"), "TIFF", {}), (rgb.convert("LA"), "PNG", {}),
                         (rgb, "WEBP", {}), (rgb.convert("I;16"), "PNG", {})]:  # fmt: skip
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        out.append(buf.getvalue())
    return out


SAMPLES = encoded_samples()


@FUZZ
@given(
    base=st.sampled_from(range(len(SAMPLES))), changes=mutations(), cut=st.one_of(st.none(), st.integers(0, 400)),
    junk=st.one_of(st.none(), st.binary(max_size=64)), channels=st.sampled_from([1, 3]),
)  # fmt: skip
def test_image_decoding_gives_pixels_or_a_conversion_error(
    base: int, changes: list[tuple[int, int]], cut: int | None, junk: bytes | None, channels: int
) -> None:
    data = junk if junk is not None else mutate(SAMPLES[base], changes, cut)
    try:
        pixels = to_pixels(data, 16)
    except ConversionError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert pixels.shape == (16, 16, 3) and pixels.dtype == np.uint8
    assert model_pixels(data, channels, 16).shape == (16, 16, channels)  # predict's view of the same bytes
