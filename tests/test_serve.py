"""`alexnet serve` for real: a subprocess on a free loopback port, every endpoint and limit over
HTTP, concurrent clients, and the page driven by Playwright in Debian's Chromium."""

from __future__ import annotations

import base64
import http.client
import io
import json
import select
import socket
import struct
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from alexnet.inference import open_predictor
from tests.helpers.interop import CLASSES, Server, make_run, real_images

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("serve") / "run", "alexnet-small")


@pytest.fixture(scope="module")
def server(run: Path) -> Iterator[Server]:
    srv = Server(run, "--precision", "fp32")
    yield srv
    err = srv.stop()
    assert "Traceback" not in err, err  # no request in these tests may crash a handler


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return real_images(tmp_path_factory.mktemp("serve-images"), 3)


def call(server: Server, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None):
    """(status, content-type, parsed JSON or text) of one request."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        raw, ctype = r.read(), r.getheader("content-type", "")
    finally:
        conn.close()
    return r.status, ctype, json.loads(raw) if ctype.startswith("application/json") else raw.decode()


def multipart(files: list[tuple[str, bytes]], field: str = "file") -> tuple[bytes, dict[str, str]]:
    boundary = "alexnet-test-boundary"
    parts = []
    for name, data in files:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
                     "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")  # fmt: skip
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def assert_error(status: int, ctype: str, body: object, expected: int, fragment: str) -> None:
    assert status == expected, (status, body)
    assert ctype.startswith("application/json") and isinstance(body, dict), body
    assert fragment.lower() in body["error"].lower(), body
    assert "Traceback" not in body["error"] and "File \"" not in body["error"]


def test_health_model_and_page(server: Server, run: Path) -> None:
    assert call(server, "GET", "/healthz")[::2] == (200, {"status": "ok"})
    status, _, info = call(server, "GET", "/v1/model")
    assert status == 200
    assert info["name"] == "alexnet-small" and info["classes"] == list(CLASSES) and info["input_size"] == 28
    assert info["source"] == run.name  # the run's name, never the server's absolute path
    status, ctype, page = call(server, "GET", "/")
    assert status == 200 and ctype.startswith("text/html")
    assert "<script" in page and "/v1/predict" in page and "http://" not in page and "https://" not in page  # no CDN


def test_predict_raw_body_and_multipart_batch_match_in_process_predict(server: Server, run: Path, images: list[str]) -> None:
    expected = open_predictor(run, precision="fp32").predict(images, 4)
    status, _, body = call(server, "POST", "/v1/predict", Path(images[0]).read_bytes(), {"Content-Type": "image/png"})
    assert status == 200, body
    assert body["model"] == "alexnet-small" and body["ms"] > 0
    assert [p["index"] for p in body["topk"]] == [p["index"] for p in expected[0]["predictions"]]  # k: all 4 classes
    assert sum(p["probability"] for p in body["topk"]) == pytest.approx(1.0, abs=1e-5)
    assert [p["probability"] for p in body["topk"]] == pytest.approx([p["probability"] for p in expected[0]["predictions"]], abs=1e-5)

    data, headers = multipart([(Path(f).name, Path(f).read_bytes()) for f in images])
    status, _, body = call(server, "POST", "/v1/predict?k=2", data, headers)
    assert status == 200, body
    assert [r["file"] for r in body["results"]] == [Path(f).name for f in images]
    for result, exp in zip(body["results"], expected):
        assert [p["class"] for p in result["topk"]] == [p["class"] for p in exp["predictions"][:2]]


@pytest.mark.parametrize("k", ["0", "5", "-1", "two"])
def test_wrong_k_is_422(server: Server, images: list[str], k: str) -> None:
    status, ctype, body = call(server, "POST", f"/v1/predict?k={k}", Path(images[0]).read_bytes())
    assert_error(status, ctype, body, 422, "k")


def _send_large(server: Server, size: int, chunked: bool, path: str = "/v1/predict") -> tuple[int, dict]:
    """POST ``size`` bytes without waiting to finish sending: the server may answer early."""
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
    head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {size}\r\n\r\n"
    chunk = b"\xff" * (256 * 1024)
    with socket.create_connection(("127.0.0.1", server.port), timeout=120) as s:
        s.sendall(head.encode())
        sent = 0
        try:
            while sent < size and not select.select([s], [], [], 0)[0]:
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                sent += len(chunk)
            if chunked and sent >= size:
                s.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = b""
        while b"\r\n\r\n" not in response or len(response.split(b"\r\n\r\n", 1)[1]) < _length(response):
            piece = s.recv(65536)
            if not piece:
                break
            response += piece
    head_text, body = response.split(b"\r\n\r\n", 1)
    return int(head_text.split()[1]), json.loads(body[: _length(response)])


def _length(response: bytes) -> int:
    for line in response.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 1 << 30


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_20_mb_body_is_413(server: Server, chunked: bool) -> None:
    status, body = _send_large(server, 20 * 1024 * 1024, chunked)
    assert status == 413 and "too large" in body["error"]


def decompression_bomb_png(side: int = 10_000) -> bytes:
    """A real PNG bomb: ``side`` x ``side`` 1-bit zeros (100 M pixels for 10,000) in ~12 kB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_decompression_bomb_is_413(server: Server) -> None:
    bomb = decompression_bomb_png()
    assert len(bomb) < 100_000
    assert struct.unpack(">II", bomb[16:24]) == (10_000, 10_000)  # IHDR: what the header promises
    status, ctype, body = call(server, "POST", "/v1/predict", bomb, {"Content-Type": "image/png"})
    assert_error(status, ctype, body, 413, "too large")


def test_truncated_jpeg_is_400(server: Server, images: list[str]) -> None:
    buf = io.BytesIO()
    Image.open(images[0]).convert("RGB").resize((300, 200)).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    status, ctype, body = call(server, "POST", "/v1/predict", data[: len(data) // 2], {"Content-Type": "image/jpeg"})
    assert_error(status, ctype, body, 400, "cannot be decoded")


def test_not_an_image_and_unsupported_format_are_415(server: Server) -> None:
    status, ctype, body = call(server, "POST", "/v1/predict", b"hello, this is text\n" * 10, {"Content-Type": "text/plain"})
    assert_error(status, ctype, body, 415, "not an image")
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(buf, "ICO")
    status, ctype, body = call(server, "POST", "/v1/predict", buf.getvalue(), {"Content-Type": "image/x-icon"})
    assert_error(status, ctype, body, 415, "unsupported image format ICO")
    data, headers = multipart([])
    status, ctype, body = call(server, "POST", "/v1/predict", data, headers)
    assert_error(status, ctype, body, 400, "no file")


def test_too_many_files_is_413(server: Server, images: list[str]) -> None:
    data, headers = multipart([(f"f{i}.png", Path(images[0]).read_bytes()) for i in range(17)])  # --max-files 16
    status, ctype, body = call(server, "POST", "/v1/predict", data, headers)
    assert_error(status, ctype, body, 413, "too many files")


def test_concurrent_requests_all_succeed_with_the_same_answer(server: Server, images: list[str]) -> None:
    data = Path(images[1]).read_bytes()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: call(server, "POST", "/v1/predict?k=3", data), range(16)))
    assert {a[0] for a in answers} == {200}
    assert len({json.dumps(a[2]["topk"]) for a in answers}) == 1


def test_explain_gradcam_and_occlusion(server: Server, run: Path, images: list[str]) -> None:
    top1 = open_predictor(run, precision="fp32").predict(images[:1], 1)[0]["predictions"][0]
    status, _, body = call(server, "POST", "/v1/explain", Path(images[0]).read_bytes(), {"Content-Type": "image/png"})
    assert status == 200, body
    assert body["method"] == "gradcam" and body["index"] == top1["index"] and body["class"] == top1["class"]
    assert body["probability"] == pytest.approx(top1["probability"], abs=1e-5) and body["ms"] > 0 and "map" not in body
    assert body["overlay"].startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(body["overlay"].split(",", 1)[1]))) as im:
        assert im.size == (252, 252)  # 28 px at 9x
    data, headers = multipart([(Path(f).name, Path(f).read_bytes()) for f in images[:2]])
    status, _, body = call(server, "POST", "/v1/explain?method=occlusion&class=1&map=true", data, headers)
    assert status == 200, body
    assert [r["file"] for r in body["results"]] == [Path(f).name for f in images[:2]]
    assert all(r["index"] == 1 and len(r["map"]) == 28 and len(r["map"][0]) == 28 for r in body["results"])


def test_explain_has_the_limits_of_predict(server: Server, images: list[str]) -> None:
    image = Path(images[0]).read_bytes()
    assert_error(*call(server, "POST", "/v1/explain?class=4", image), 422, "out of range")
    assert_error(*call(server, "POST", "/v1/explain?method=lime", image), 422, "method")
    assert_error(*call(server, "POST", "/v1/explain", b"just text\n" * 10), 415, "not an image")
    data, headers = multipart([(f"f{i}.png", image) for i in range(17)])
    assert_error(*call(server, "POST", "/v1/explain", data, headers), 413, "too many files")
    status, body = _send_large(server, 20 * 1024 * 1024, False, "/v1/explain")
    assert status == 413 and "too large" in body["error"]


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (apt-get install chromium)")
def test_page_in_chromium_shows_top5(server: Server, run: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    picture = real_images(tmp_path_factory.mktemp("browser"), 1)[0]
    expected = open_predictor(run, precision="fp32").predict([picture], 4)[0]["predictions"]
    shot = tmp_path_factory.mktemp("screenshot") / "serve-page.png"  # look at it: pytest --basetemp=DIR
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 600})
            page.goto(server.url + "/")
            page.wait_for_selector("#model:has-text('alexnet-small')")
            page.set_input_files("#file", picture)
            page.wait_for_selector("#top5 li.prediction", timeout=60_000)
            labels = page.locator("#top5 li.prediction .label").all_text_contents()
            widths = page.locator("#top5 li.prediction .bar").evaluate_all("bars => bars.map(b => b.style.width)")
            page.screenshot(path=str(shot), full_page=True)
            page.check("#explain")  # the overlay toggle: Grad-CAM of the top class over the image
            page.wait_for_selector("#overlay[src^='data:image/png']", state="visible", timeout=60_000)
            overlay_class = page.get_attribute("#overlay", "data-class")
            preview_hidden = page.is_hidden("#preview")
            page.screenshot(path=str(shot.with_name("serve-page-overlay.png")), full_page=True)
            page.uncheck("#explain")
            page.wait_for_selector("#overlay", state="hidden")
            preview_back = page.is_visible("#preview")
            not_image = Path(picture).with_name("notes.txt")
            not_image.write_text("not a picture\n")
            page.set_input_files("#file", str(not_image))
            page.wait_for_selector("#error:has-text('not an image')", timeout=60_000)
            bars_after_error = page.locator("#top5 li").count()
        finally:
            browser.close()
    assert labels == [p["class"] for p in expected]
    assert overlay_class == expected[0]["class"] and preview_hidden and preview_back
    assert [float(w.rstrip("%")) for w in widths] == pytest.approx([100 * p["probability"] for p in expected], abs=0.06)
    assert shot.stat().st_size > 1000
    assert bars_after_error == 0  # the page shows the API's error instead of stale bars


def test_bench_serve_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnxruntime")
    from tests.helpers.interop import run_main

    code, out, err = run_main(capsys, "bench", "serve", "--model", "alexnet-small", "--requests", "12", "--iters", "3",
                              "--concurrency", "1,4", "--json")  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert [lv["concurrency"] for lv in result["server"]] == [1, 4]
    assert all(lv["errors"] == 0 and lv["requests"] == 12 and lv["p99_ms"] >= lv["p50_ms"] > 0 for lv in result["server"])
    assert result["in_process_torch"]["n"] == 3 and result["onnxruntime"]["p50_ms"] > 0
    assert result["onnx_check_max_abs_diff"] <= 1e-4 and result["server_p50_c1_over_onnxruntime_p50"] > 0
