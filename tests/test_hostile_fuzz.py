"""Bounded fuzzing (hypothesis, fixed budget, derandomized) of what a hostile file can say:
checkpoint fields at any magnitude (10^12 classes, an image side of 2^40, NaN means) and the
files of a baseline run folder (damaged JSON fields, cut or flipped npz bytes). Whatever they
say, loading gives the model or a one-line :class:`~alexnet.errors.UserError`, and a model that
loads takes an image. Each fuzz runs in a child process under an address-space limit and must
stay under 1 GB of memory, so a missing bound fails the test instead of the machine.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

pytest.importorskip("hypothesis")

from tests.helpers.hostile import BOUNDED_RSS, child, peak_rss

FUZZ_SETUP = """
    import io, json, math, shutil, sys, tempfile
    from pathlib import Path
    import numpy as np
    import torch
    from hypothesis import HealthCheck, given, settings, strategies as st
    from alexnet.errors import UserError

    FUZZ = settings(max_examples={examples}, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))
    HUGE = st.one_of(st.integers(-2**63, 2**63), st.sampled_from([0, -1, 10**6, 10**9, 10**12, 2**31, 2**40]))
    NUMBER = st.one_of(HUGE, st.floats(allow_nan=True, allow_infinity=True))
    JUNK = st.one_of(st.none(), st.booleans(), NUMBER, st.text(max_size=6), st.lists(NUMBER, max_size=4),
                     st.dictionaries(st.text(max_size=4), NUMBER, max_size=2))
    work = Path({work!r})
    seen = {{"loaded": 0, "refused": 0}}
"""


def run_fuzz(body: str, work: Path, examples: int) -> None:
    proc = child(textwrap.dedent(FUZZ_SETUP).format(examples=examples, work=str(work)) + textwrap.dedent(body), timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "fuzzed" in proc.stdout, proc.stdout
    assert "'loaded': 0" not in proc.stdout and "'refused': 0" not in proc.stdout, proc.stdout  # both sides were reached
    assert peak_rss(proc) < BOUNDED_RSS, peak_rss(proc)


def test_checkpoint_fields_at_any_magnitude_load_or_give_one_line(tmp_path: Path) -> None:
    run_fuzz("""
        from PIL import Image
        from alexnet.data.images import load_image
        from alexnet.evaluation import load_model
        from tests.helpers.hostile import apply_edits, make_run

        raw = torch.load(make_run(work / "run") / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
        image = work / "image.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(image)
        FIELDS = ["num_classes", "classes", "data.channels", "data.image_size", "data.crop", "data.mean", "data.std",
                  "data.mean_image"]
        TENSORS = st.tuples(st.integers(0, 4), st.integers(0, 40), st.integers(0, 40)).map(lambda s: torch.zeros(s))

        @FUZZ
        @given(edits=st.lists(st.tuples(st.sampled_from(FIELDS), st.one_of(JUNK, TENSORS)), min_size=1, max_size=3))
        def check(edits):
            d = apply_edits({**raw, "data": dict(raw["data"])}, edits)
            path = work / "fuzz.pt"
            torch.save(d, path)
            try:
                m = load_model(path, torch.device("cpu"))
            except UserError as e:
                assert "\\n" not in str(e)
                seen["refused"] += 1
                return
            seen["loaded"] += 1
            x = load_image(image, m.convention).unsqueeze(0).float()
            assert m.model(x).shape == (1, len(m.classes))  # what loads, predicts

        check()
        print("fuzzed", seen)
    """, tmp_path, examples=80)


def test_baseline_run_files_load_or_give_one_line(tmp_path: Path) -> None:
    run_fuzz("""
        from alexnet.baselines.pipeline import load_baseline
        from alexnet.cli import main

        run = work / "run"
        assert main(["baseline", "--features", "hog", "--data", "synthetic:classes=3,size=16,train=48,val=12,channels=1",
                     "--out", str(run), "--no-progress"]) == 0
        files = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
        JSON = ["config.json", "extractor.json"]
        NPZ = ["classifier.npz", "extractor.npz"]

        def damage(value, draw, depth=0):
            if isinstance(value, dict) and value and depth < 3 and draw(st.integers(0, 3)):
                key = draw(st.sampled_from(sorted(value)))
                return {**value, key: damage(value[key], draw, depth + 1)}
            if isinstance(value, list) and value and depth < 3 and draw(st.integers(0, 3)):
                i = draw(st.integers(0, len(value) - 1))
                return value[:i] + [damage(value[i], draw, depth + 1)] + value[i + 1:]
            return draw(JUNK)

        @FUZZ
        @given(data=st.data())
        def check(data):
            for name, content in files.items():
                (run / name).write_bytes(content)
            name = data.draw(st.sampled_from(JSON + NPZ))
            if name in JSON:
                new = json.dumps(damage(json.loads(files[name]), data.draw)).encode()
            else:
                blob = bytearray(files[name])
                for _ in range(data.draw(st.integers(0, 3))):
                    blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
                new = bytes(blob[: data.draw(st.integers(0, len(blob)))])
            (run / name).write_bytes(new)
            try:
                loaded = load_baseline(run)
            except UserError as e:
                assert "\\n" not in str(e)
                seen["refused"] += 1
                return
            seen["loaded"] += 1
            c, side = loaded.config["channels"], loaded.config["crop"]
            images = torch.randint(0, 256, (2, c, side, side), dtype=torch.uint8)
            assert loaded.scores(images).shape == (2, len(loaded.classes))  # what loads, scores

        check()
        print("fuzzed", seen)
    """, tmp_path, examples=80)
