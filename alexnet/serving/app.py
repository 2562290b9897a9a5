"""The HTTP app: a page, a prediction endpoint, model info and a health check.

Endpoints:

* ``GET /``: a page to drop or pick an image; shows it with its top-5 classes as bars (plain
  HTML and a little JavaScript from this package, nothing from a CDN);
* ``POST /v1/predict?k=5`` (default: 5, or all classes if fewer): a multipart form with one or more files (batched into one forward
  pass) or a raw image body. One image: ``{"model", "topk": [{"class", "index",
  "probability"}], "ms"}``; several: ``{"model", "results": [{"file", "topk"}], "ms"}``
  (``ms``: server time for decoding and the forward pass);
* ``POST /v1/explain?method=gradcam|occlusion&class=INDEX&map=false``: the same uploads; where
  in each image the prediction (or class ``INDEX``) comes from (:mod:`alexnet.reporting.explain`):
  ``{"model", "method", "class", "index", "probability", "overlay": PNG data URI, "ms"}`` (+ ``map``,
  rows of numbers, with ``map=true``); several files: ``{"model", "results": [{"file", ...}], "ms"}``.
  A model without layers (baseline, ONNX) or a class out of range is a 422;
* ``GET /healthz``: ``{"status": "ok"}``; ``GET /v1/model``: name, classes, input size, source.

Limits, each a JSON ``{"error": ...}`` with its status and never a stack trace: request body
over ``max_body`` bytes (413, checked on Content-Length and while streaming), an image of more
than ``max_pixels`` pixels, the decompression-bomb case (413), a body that is not an image or
not one of :data:`FORMATS` (415), an image that does not decode, such as a truncated JPEG (400),
``k`` not in 1..classes (422), more than ``max_files`` files (413). Requests are decoded in
parallel threads; the forward passes take turns on the one model (a lock), so concurrent
requests are safe and the model is in memory once per worker process.
"""

from __future__ import annotations

import io
import json
import os
import time
import warnings
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image, UnidentifiedImageError

from alexnet.errors import UserError
from alexnet.inference import open_predictor

try:  # at module level: FastAPI resolves the handlers' (string) annotations in this namespace
    from fastapi import FastAPI, Query, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException
except ImportError:  # the optional extra is missing: create_app says so in one line
    FastAPI = None  # type: ignore[assignment,misc]

# Formats the page and API accept (what Pillow decodes well and photos come in).
FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF", "PPM")
ENV_CONFIG = "ALEXNET_SERVE_CONFIG"
MISSING = "serving needs the optional packages fastapi, uvicorn and python-multipart: pip install 'alexnet[serve]'"  # how `--workers N` hands the settings to each worker process


@dataclass(frozen=True)
class ServeConfig:
    """What the server serves and its limits."""

    source: str
    device: str = "auto"
    precision: str = "auto"
    max_body: int = 10 * 1024 * 1024  # bytes (default: 10 MB)
    max_pixels: int = 25_000_000  # ~5000x5000; a 12 MP phone photo passes, a bomb does not
    max_files: int = 16


class ApiError(Exception):
    """An error for the client: HTTP ``status`` and a one-line ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class ServedModel:
    """The model a server serves (any kind :func:`alexnet.inference.open_predictor` opens), with the
    server's checks on uploads; prediction is the predictor's, thread-safe."""

    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.predictor = open_predictor(cfg.source, cfg.device, cfg.precision)
        self.name, self.classes = self.predictor.name, self.predictor.classes
        c = self.predictor.convention
        with torch.inference_mode():  # first call allocates; do it before the first request
            self.topk(torch.zeros(1, c.channels, c.crop, c.crop, dtype=torch.uint8), 1)

    def info(self) -> dict[str, Any]:
        """What ``GET /v1/model`` returns (the run's name, not its path: the server's folders are
        nobody's business)."""
        return self.predictor.info()

    def decode(self, data: bytes, name: str) -> torch.Tensor:
        """An uploaded file -> uint8 ``C x crop x crop``, or an :class:`ApiError` saying why not."""
        if not data:
            raise ApiError(400, f"{name}: empty file")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data)) as im:
                    fmt, (w, h) = im.format, im.size
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ApiError(413, f"{name}: image too large (over {self.cfg.max_pixels} pixels)") from None
        except UnidentifiedImageError:
            raise ApiError(415, f"{name}: not an image (accepted formats: {', '.join(FORMATS)})") from None
        except (OSError, ValueError, SyntaxError):
            raise ApiError(400, f"{name}: the image header cannot be read") from None
        if fmt not in FORMATS:
            raise ApiError(415, f"{name}: unsupported image format {fmt} (accepted: {', '.join(FORMATS)})")
        if w * h > self.cfg.max_pixels:
            raise ApiError(413, f"{name}: image too large ({w}x{h} pixels; the limit is {self.cfg.max_pixels} pixels)")
        try:  # the model's own eval transform, on the bytes already in memory
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                return self.predictor.decode(data, name)
        except (UserError, Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ApiError(400, f"{name}: the image cannot be decoded (truncated or corrupt {fmt})") from None

    def topk(self, batch: torch.Tensor, k: int) -> list[list[dict[str, Any]]]:
        """Top-``k`` records of each image of a uint8 batch (one forward pass)."""
        return self.predictor.top_k(batch, k)

    def explain(self, pixels: torch.Tensor, method: str, target: int | None, with_map: bool) -> dict[str, Any]:
        """One decoded image's saliency record with its overlay as a PNG data URI; 422 when the
        model cannot be explained (no layers) or ``target`` is no class."""
        import base64

        from alexnet.reporting.explain import explain_pixels, overlay_png

        try:
            e = explain_pixels(self.predictor, pixels, method, target)
        except UserError as err:
            raise ApiError(422, str(err)) from None
        picture = overlay_png(pixels, e.heat, self.predictor.convention.channel_order == "BGR")
        return e.to_dict(with_map) | {"overlay": "data:image/png;base64," + base64.b64encode(picture).decode("ascii")}


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``limit`` bytes, by Content-Length or while streaming."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _send_error(send, 413, f"request body too large ({int(declared)} bytes; the limit is {self.limit})")
            return
        seen, started = 0, False
        too_large = f"request body too large (over {self.limit} bytes)"

        async def limited_receive() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:  # raised inside the app: its ApiError handler answers 413
                    raise ApiError(413, too_large)
            return message

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except ApiError as e:  # raised where the app's handlers do not reach (e.g. while parsing a form)
            if not started:
                await _send_error(send, e.status, e.message)


async def _send_error(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def read_uploads(request: Request, cfg: ServeConfig) -> list[tuple[str, bytes]]:
    """The images of a request: every file of a multipart form (at most ``cfg.max_files``), or the raw body."""
    uploads: list[tuple[str, bytes]] = []
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        try:
            form = await request.form(max_files=cfg.max_files, max_fields=cfg.max_files, max_part_size=cfg.max_body)
        except HTTPException as e:  # starlette's: too many files or a malformed form
            raise ApiError(413 if "many" in str(e.detail).lower() else 400, str(e.detail)) from None
        for _, value in form.multi_items():
            if isinstance(value, UploadFile):
                uploads.append((value.filename or "file", await value.read()))
        await form.close()
        if not uploads:
            raise ApiError(400, "the form has no file; send the image as a file field or as the raw body")
    else:
        uploads.append(("body", await request.body()))
    return uploads


def create_app(cfg: ServeConfig) -> Any:
    """The FastAPI app serving ``cfg.source`` (the model is loaded here, once)."""
    if FastAPI is None:
        raise UserError(MISSING)

    # Pillow's own guard (an error at twice the limit, a warning above it, which decode() turns
    # into an error) also covers formats whose size is only known while decoding.
    Image.MAX_IMAGE_PIXELS = cfg.max_pixels
    predictor = ServedModel(cfg)
    page = resources.files("alexnet.serving").joinpath("page.html").read_text()
    app = FastAPI(title="alexnet", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, e: ApiError) -> JSONResponse:
        return JSONResponse({"error": e.message}, status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "query")
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid request')}"}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, e: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(e.detail)}, status_code=e.status_code)

    @app.exception_handler(Exception)
    async def internal(_request: Request, _e: Exception) -> JSONResponse:  # logged by uvicorn, never sent
        return JSONResponse({"error": "internal server error"}, status_code=500)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:  # browsers ask for one; no icon, and no 404 in their console
        return Response(status_code=204)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/model")
    def model_info() -> dict[str, Any]:
        return predictor.info()

    @app.post("/v1/predict")
    async def predict(request: Request, k: int | None = Query(None, ge=1, description="classes per image")) -> dict[str, Any]:
        start = time.perf_counter()
        classes = len(predictor.classes)
        k = min(5, classes) if k is None else k
        if k > classes:
            raise ApiError(422, f"k: must be between 1 and {classes} (the model's classes), got {k}")
        uploads = await read_uploads(request, cfg)
        images = [await run_in_threadpool(predictor.decode, data, name) for name, data in uploads]
        results = await run_in_threadpool(predictor.topk, torch.stack(images), k)
        ms = (time.perf_counter() - start) * 1000
        if len(results) == 1:
            return {"model": predictor.name, "topk": results[0], "ms": ms}
        return {"model": predictor.name, "results": [{"file": n, "topk": r} for (n, _), r in zip(uploads, results)], "ms": ms}

    @app.post("/v1/explain")
    async def explain(request: Request, method: Literal["gradcam", "occlusion"] = "gradcam",
                      target: int | None = Query(None, alias="class", ge=0, description="class index (default: predicted)"),
                      with_map: bool = Query(False, alias="map", description="also the map as rows of numbers"),
                      ) -> dict[str, Any]:  # fmt: skip
        start = time.perf_counter()
        uploads = await read_uploads(request, cfg)
        images = [await run_in_threadpool(predictor.decode, data, name) for name, data in uploads]
        results = [await run_in_threadpool(predictor.explain, image, method, target, with_map) for image in images]
        ms = (time.perf_counter() - start) * 1000
        if len(results) == 1:
            return {"model": predictor.name} | results[0] | {"ms": ms}
        return {"model": predictor.name, "results": [{"file": n} | r for (n, _), r in zip(uploads, results)], "ms": ms}

    return BodyLimit(app, cfg.max_body)


def create_app_from_env() -> Any:
    """The app for each of uvicorn's worker processes (``--workers N``): settings from the environment."""
    return create_app(ServeConfig(**json.loads(os.environ[ENV_CONFIG])))


def check_address(host: str, port: int) -> None:
    """A one-line error now, before the model loads or anything says "listening", for a host that
    is no address of this machine (``256.1.1.1``, a name that does not resolve) or a port that is
    taken or reserved, rather than uvicorn's log after loading."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as e:
        raise UserError(f"--host {host} is not an address or host name of this machine ({getattr(e, 'strerror', e)})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a closed server's port is free
        try:
            s.bind(address)
        except OSError as e:
            raise UserError(f"cannot listen on {host} port {port}: {e.strerror or e}; choose another with --port") from None


try:  # uvicorn answers a request it cannot parse (a negative Content-Length) before the app sees it
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class JsonErrorProtocol(H11Protocol):  # type: ignore[misc]
        """uvicorn's HTTP/1.1 protocol whose own 400 answer is the API's JSON ``{"error": ...}``,
        not plain text, like every other error the API gives."""

        def send_400_response(self, msg: str) -> None:
            body = json.dumps({"error": msg}).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                       (b"connection", b"close")]  # fmt: skip
            for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"), h11.Data(data=body),
                          h11.EndOfMessage()):  # fmt: skip
                self.transport.write(self.conn.send(event))
            self.transport.close()

except ImportError:  # the optional extra is missing: serve says so in one line
    JsonErrorProtocol = None  # type: ignore[assignment,misc]


def serve(cfg: ServeConfig, host: str = "127.0.0.1", port: int = 8000, workers: int = 1, ready: Any = None) -> None:
    """Run the server until interrupted (loopback unless ``host`` says otherwise); ``ready()`` is
    called once the model is loaded, just before listening."""
    try:
        import uvicorn
    except ImportError:
        raise UserError(MISSING) from None
    if not Path(cfg.source).exists():
        raise UserError(f"model not found: {cfg.source}")
    check_address(host, port)
    app = create_app(cfg)  # with several workers: fail here, once, with one line, rather than in each
    if ready is not None:
        ready()
    if workers == 1:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, http=JsonErrorProtocol)
        return
    del app
    os.environ[ENV_CONFIG] = json.dumps(asdict(cfg))
    uvicorn.run("alexnet.serving.app:create_app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level="warning", access_log=False, http=JsonErrorProtocol)  # fmt: skip
