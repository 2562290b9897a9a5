"""`alexnet report`: the numbers behind the figures, the HTML it writes, and the page as a
browser renders it (headless Chromium)."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet import models
from alexnet.cli import main
from alexnet.evaluation.confusion import confusion_matrix, most_confused, per_class_errors
from alexnet.evaluation.hierarchy import Hierarchy
from alexnet.evaluation.kernels import chroma_share, colour_specificity, conv1_kernels
from alexnet.reporting.report import SECTIONS, lr_drops
from tests.helpers.cli import assert_one_line_error, cli_main

SYN = "synthetic:classes=4,size=28,train=64,val=32,channels=3"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the CLI in-process; (exit code, stdout, stderr)."""
    return cli_main(capsys, *args)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("report") / "run"
    # The paper's plateau schedule (lr drops are marked under it; see test_lr_drops_...).
    code = main(["train", "--data", SYN, "--epochs", "1", "--batch-size", "16", "--lr", "0.01", "--schedule", "plateau",
                 "--no-progress", "--out", str(run)])  # fmt: skip
    assert code == 0
    return run


@pytest.fixture(scope="module")
def report(tiny_run: Path) -> Path:
    assert main(["report", str(tiny_run), "--no-progress", "--samples", "4", "--k", "3"]) == 0
    return tiny_run / "report.html"


# --------------------------------------------------------------------------- colour specificity


def test_colour_specificity_of_hand_made_kernels() -> None:
    g = torch.Generator().manual_seed(0)
    pattern = torch.randn(5, 1, 7, 7, generator=g)
    grey = pattern.expand(5, 3, 7, 7)  # R = G = B: sees luminance only
    red_only = torch.cat([pattern, torch.zeros(5, 2, 7, 7)], dim=1)  # one channel
    opponent = torch.cat([pattern, -pattern, torch.zeros(5, 1, 7, 7)], dim=1)  # R = -G
    assert torch.allclose(chroma_share(grey), torch.zeros(5, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(chroma_share(red_only), torch.full((5,), 2 / 3, dtype=torch.float64))
    assert torch.allclose(chroma_share(opponent), torch.ones(5, dtype=torch.float64))
    assert colour_specificity(grey) == pytest.approx(0.0, abs=1e-12)
    mixed = torch.cat([grey, opponent])
    assert colour_specificity(mixed) == pytest.approx(0.5)
    assert colour_specificity(torch.randn(4, 1, 5, 5)) is None  # grayscale model: no colour


def test_conv1_kernels_split_by_tower() -> None:
    two = models.create("alexnet-small", 4)
    towers = conv1_kernels(two).towers
    assert [t.shape for t in towers] == [torch.Size([16, 3, 5, 5])] * 2
    assert torch.equal(torch.cat(towers), two.features.conv1.weight.detach())
    one = models.create("alexnet-small", 4, towers=1)
    assert len(conv1_kernels(one).towers) == 1


# --------------------------------------------------------------------------- LCA heights

#        root
#       /    \
#   animal   vehicle
#    /   \       \
#  dog   cat     car        (and "wolfdog" under both dog and wolf: a DAG)
#  / \     wolf
# husky beagle  \
#            wolfdog
TREE = Hierarchy({"root": ["animal", "vehicle"], "animal": ["dog", "cat", "wolf"], "dog": ["husky", "beagle", "wolfdog"],
                  "wolf": ["wolfdog"], "vehicle": ["car"]})  # fmt: skip


def test_lca_height_on_a_small_hierarchy() -> None:
    assert TREE.lca_height("husky", "husky") == 0
    assert TREE.lca_height("husky", "beagle") == 1  # siblings
    assert TREE.lca_height("husky", "cat") == 2  # husky -> dog -> animal
    assert TREE.lca_height("cat", "husky") == 2  # symmetric
    assert TREE.lca_height("husky", "car") == 3  # up to the root
    assert TREE.lca_height("wolfdog", "wolf") == 1  # the nearer of its two parents
    assert TREE.lca_height("husky", "nowhere") is None
    classes = ["husky", "beagle", "cat", "car"]
    labels = np.array([0, 0, 1, 2, 3, 3])
    predicted = np.array([0, 1, 0, 0, 3, 0])
    assert TREE.mistake_heights(classes, labels, predicted).tolist() == [1, 1, 2, 3]
    assert Hierarchy.from_dict(json.loads(json.dumps(TREE.to_dict()))).lca_height("beagle", "car") == 3


# --------------------------------------------------------------------------- confusions


def test_confusion_per_class_and_most_confused_pairs() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    top = np.array([[0, 1], [1, 0], [1, 2], [1, 0], [2, 1], [0, 2], [2, 0], [1, 2]])
    matrix = confusion_matrix(labels, top[:, 0], 4)
    assert matrix.tolist() == [[1, 2, 0, 0], [0, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 0]]
    table = per_class_errors(labels, top, 4)
    assert table[:3, 0].tolist() == [3, 2, 3]
    assert table[:3, 1] == pytest.approx([2 / 3, 1 / 2, 2 / 3])
    assert table[:3, 2] == pytest.approx([1 / 3, 0.0, 0.0])  # only image 2 ([1, 2] for class 0) misses both guesses
    assert np.isnan(table[3, 1])
    pairs = most_confused(labels, top[:, 0], 4, top=3)
    assert [(p.true, p.predicted, p.count) for p in pairs] == [(0, 1, 2), (1, 2, 1), (2, 0, 1)]
    assert pairs[0].examples == (1, 2)


def test_lr_drops_are_the_epochs_after_which_the_lr_fell() -> None:
    history = [{"epoch": e, "lr": lr} for e, lr in enumerate([0.01, 0.01, 0.001, 0.001, 0.0001], 1)]
    assert lr_drops(history, 0.01) == [3, 5]
    assert lr_drops(history[2:], 0.01) == [3, 5]  # the drop before the first record shown counts too
    assert lr_drops([{"epoch": 1, "lr": 0.1}], 0.1) == []


# --------------------------------------------------------------------------- the HTML


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: list[dict[str, str]] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "section":
            self.sections.append(a["id"])
        elif tag == "img":
            self.images.append(a)
        elif tag == "script":
            self.scripts += 1


def test_report_holds_every_section_with_decodable_images(report: Path, tiny_run: Path) -> None:
    text = report.read_text()
    page = _Collect()
    page.feed(text)
    assert page.sections == list(SECTIONS)
    assert page.scripts == 0 and "http://" not in text and "https://" not in text  # self-contained
    sizes = {}
    for img in page.images:
        assert img["src"].startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(img["src"].split(",", 1)[1]))) as im:
            im.load()
            assert im.size == (int(img["width"]), int(img["height"]))
            sizes[img["alt"]] = im.size
    # Figure 3: 32 kernels of 5x5 at 8x in rows of 16: two tower blocks of one row each.
    assert sizes["conv1 kernels"] == (16 * 42 + 2, 2 * 44 + 14)
    # Figure 4 right: 4 query rows of 1 + 3 tiles of 96 px with 14 px captions.
    assert sizes["nearest training images"] == (6 + 4 * 102 + 16, 6 + 4 * (96 + 14 + 6))
    for alt in ("training curves", "top-5 guesses", "confusion matrix", "examples of confused pairs"):
        assert alt in sizes
    # Layers: a row of 9 patches (56 px tiles) per representative unit of each conv layer, units cached.
    for layer in ("conv1", "conv2", "conv3", "conv4", "conv5"):
        width, height = sizes[f"{layer} top patches"]
        assert width == 6 + 9 * 62 and (height - 6) % (56 + 14 + 6) == 0 and 1 <= (height - 6) // 76 <= 6
    assert "<td>conv5</td><td>43x43</td>" in text  # alexnet-small's conv5 sees more than the 28 px image
    # Figure 4 (left)'s samples with their Grad-CAM and occlusion maps: 3 rows of 4 tiles of 96 px.
    assert sizes["where the top class comes from"] == (6 + 4 * 102, 6 + 3 * (96 + 14 + 6))
    assert (tiny_run / "layers" / "top9-val.json").is_file()
    # Colour specificity is printed per tower; the lr drop of the plateau schedule is named.
    assert text.count("<td>tower ") == 2
    assert "The learning rate was not lowered during this run." in text
    assert "Needs a class hierarchy" in text  # synthetic data has none
    assert (tiny_run / "retrieval" / "fc7-train.json").is_file()
    assert not list(tiny_run.glob(".report.html.*"))  # no temporary left behind


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package (make test installs it)")
def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    width, window = 1280, 9000
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={width},{window}", f"--screenshot={shot}",
         report.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert shot.is_file(), proc.stderr[-2000:]
    shutil.copyfile(shot, report.with_suffix(".png"))  # kept beside the report to look at
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (window, width)
    ink = (pixels < 235).any(axis=1)
    content = int(np.flatnonzero(ink)[-1]) + 1  # last row with anything drawn
    assert ink.mean() > 0.3, "the page is mostly blank"
    # Expected height: every image at its displayed size (capped at the 1148 px column) plus text.
    page = _Collect()
    page.feed(report.read_text())
    images = sum(int(i["height"]) * min(1.0, 1148 / int(i["width"])) for i in page.images)
    assert images < content < images + 3600, (images, content)  # text and tables: ~3,100 px
    assert content < window - 50, "the page is longer than the screenshot window"
    # The kernels' colours reached the screen: the Figure 3 block is far from grey.
    rgb = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert (np.abs(rgb[..., 0] - rgb[..., 1]) > 40).sum() > 2000


# --------------------------------------------------------------------------- bad input


def test_report_bad_input_is_one_line(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    no_metrics = tmp_path / "no-metrics"
    shutil.copytree(tiny_run, no_metrics, ignore=shutil.ignore_patterns("metrics.jsonl", "retrieval", "report.*"))
    code, _, err = cli(capsys, "report", str(no_metrics))
    assert_one_line_error((code, err), "no metrics")
    code, _, err = cli(capsys, "report", str(tiny_run), "--data", "synthetic:classes=5,size=28,train=8,val=8")
    assert_one_line_error((code, err), "expects 4 classes")
    code, _, err = cli(capsys, "report", str(tmp_path / "missing"))
    assert_one_line_error((code, err), "not a run folder")
    # A failed report leaves the good one in place.
    good = tiny_run / "report.html"
    before = good.read_bytes() if good.exists() else None
    code, _, err = cli(capsys, "report", str(tiny_run), "--out", str(good), "--data", "synthetic:classes=4,size=32,train=8,val=8")
    assert_one_line_error((code, err), "crops")
    assert (good.read_bytes() if good.exists() else None) == before


def test_report_options_ten_crop_row_and_no_retrieval(tiny_run: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    out = tmp_path / "flip.html"
    code, stdout, err = cli(capsys, "report", str(tiny_run), "--flip", "--no-retrieval", "--out", str(out), "--no-progress")
    assert code == 0, err
    assert f"report written to {out}" in stdout
    text = out.read_text()
    assert "1 model(s), flip (2 view(s) per image)" in text
    assert "Skipped (--no-retrieval)" in text
    page = _Collect()
    page.feed(text)
    assert "nearest training images" not in {i["alt"] for i in page.images}


def test_report_draws_a_saved_probe(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "probe", str(tiny_run), "--layers", "conv1,conv5,fc7", "--train-images", "32", "--no-progress")
    assert code == 0, err
    out = tmp_path / "probe.html"
    code, _, err = cli(capsys, "report", str(tiny_run), "--no-retrieval", "--out", str(out), "--no-progress")
    assert code == 0, err
    probe = out.read_text().split('<section id="probe">')[1].split("</section>")[0]
    page = _Collect()
    page.feed(probe)
    assert [i["alt"] for i in page.images] == ["probe accuracy per layer"]
    for name in ("conv1", "conv5", "fc7", "hog", "pixels"):
        assert f"<td>{name}</td>" in probe
    assert "earlier checkpoint" not in probe


def test_layers_section_of_the_paper_net(tmp_path: Path) -> None:
    from alexnet.evaluation.features import open_session
    from alexnet.reporting.html import Section
    from alexnet.reporting.layers import layers_section
    from tests.helpers.interop import make_run

    run = make_run(tmp_path / "paper", "alexnet")  # freshly initialised, RGB, 4 classes, crop 227
    session = open_session(run, "synthetic:classes=4,size=227,train=4,val=6,channels=3", precision_name="fp32")
    s = Section("layers", "")
    layers_section(s, session, run, progress=False, log=lambda _: None)
    html = "".join(s.blocks)
    assert "<td>conv5</td><td>163x163</td>" in html
    assert html.count('alt="conv') == 5 and (run / "layers" / "top9-val.json").is_file()


def test_baseline_run_says_which_sections_have_no_meaning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "baseline"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"kind": "baseline", "method": "hog+linear-svm", "data": SYN}))
    (run / "metrics.json").write_text(json.dumps({"top1_err": 0.25, "top5_err": 0.0}))
    labels = np.array([0, 1, 2, 3] * 8)
    topk = np.stack([(labels + (np.arange(32) % 4 == 0)) % 4, (labels + 1) % 4], axis=1)
    np.savez(run / "predictions.npz", labels=labels, topk=topk)
    code, _, err = cli(capsys, "report", str(run), "--no-progress")
    assert code == 0, err
    text = (run / "report.html").read_text()
    for what in ("it has no learned convolution kernels", "it has no fc7 layer", "it is not trained by epochs",
                 "a linear SVM on hand-made features (HOG, SIFT, pixels) has no learned layers to show",
                 "it has no layers to probe"):
        assert "Not meaningful for a baseline run: " + what in text
    assert "hog+linear-svm" in text and "25.00%" in text
    page = _Collect()
    page.feed(text)
    assert page.sections == list(SECTIONS)
    assert {i["alt"] for i in page.images} == {"confusion matrix", "examples of confused pairs"}


# --------------------------------------------------------------------------- ImageNet mistake severity


def test_devkit_synset_tree_reaches_the_manifest_and_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from alexnet.data.prepare.devkit import parse_devkit
    from alexnet.data.prepare.run import Settings, prepare
    from tests.helpers import layouts as fx

    tree = parse_devkit(fx.meta_mat(), None, "fixture").hierarchy()
    wnid = {i: w for i, w, *_ in fx.LEAVES + fx.INNER}  # meta.mat lists children by ILSVRC2012_ID
    assert tree == {"children": {"n00000004": [wnid[1], wnid[2], wnid[3]], "n00500005": ["n00000004"]},
                    "names": {"n00000004": "entity", "n00500005": "thing"}}  # fmt: skip
    out = tmp_path / "imagenet"
    prepare(fx.make_ilsvrc(tmp_path / "src"), out, settings=Settings(size=32, encoding="raw", shard_size=8), workers=1,
            progress=False)  # fmt: skip
    assert json.loads((out / "manifest.json").read_text())["hierarchy"] == tree
    run = tmp_path / "run"
    assert main(["train", "--data", str(out), "--model", "alexnet-small", "--epochs", "1", "--batch-size", "4",
                 "--lr", "0.01", "--no-progress", "--out", str(run)]) == 0  # fmt: skip
    code, _, err = cli(capsys, "report", str(run), "--no-progress", "--samples", "2", "--k", "2")
    assert code == 0, err
    text = (run / "report.html").read_text()
    severity = text[text.index('<section id="severity">') :]
    page = _Collect()
    page.feed(severity)
    metrics = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    if metrics["val_top1_err"] > 0:  # three sibling classes under "entity": every mistake has height 1
        assert "<td>1.00</td>" in severity and {i["alt"] for i in page.images} >= {"mistake severity histogram"}
    else:
        assert "No top-1 mistakes" in severity


def test_report_of_an_imported_caffe_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Imported weights have no training history: the report says so and shows every layer."""
    from tests.helpers.caffe import caffe_layers, write_files

    rng = np.random.default_rng(0)
    proto, weights, mean = write_files(tmp_path, caffe_layers(rng), v1=False,
                                       mean_bgr=rng.uniform(80, 160, size=(3, 256, 256)).astype(np.float32))  # fmt: skip
    run = tmp_path / "imported"
    assert cli(capsys, "import", "caffe", str(proto), str(weights), "--mean", str(mean), "--out", str(run))[0] == 0
    data = "synthetic:classes=10,size=227,train=20,val=12,channels=3"
    code, _, err = cli(capsys, "report", str(run), "--data", data, "--no-progress")
    assert code == 0, err
    page = _Collect()
    page.feed((run / "report.html").read_text())
    assert page.sections == list(SECTIONS)
    assert "Imported weights (alexnet import): no training history here." in (run / "report.html").read_text()
    assert sum(i["alt"].startswith("conv") for i in page.images) >= 5  # conv1 kernels and the conv1..conv5 grids
