"""One self-contained HTML page: inline CSS, images as ``data:`` URIs, no JavaScript, so the
file opens offline in any browser and can be mailed or archived on its own."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field

from PIL import Image

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1180px;
       color: #1d2330; background: #fff; line-height: 1.45; padding: 0 16px; }
h1 { margin-bottom: 4px; } h2 { border-bottom: 2px solid #dfe3ea; padding-bottom: 4px; margin-top: 36px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 14px; }
th, td { border: 1px solid #dfe3ea; padding: 3px 9px; text-align: left; }
th { background: #f3f5f8; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; display: block; margin: 8px 0; image-rendering: auto; }
.note { color: #5a6478; font-style: italic; } .warn { color: #a23b00; font-weight: 600; }
nav a { margin-right: 12px; }
"""


def png(image: Image.Image | bytes) -> bytes:
    """PNG bytes of a Pillow image (bytes pass through)."""
    if isinstance(image, bytes):
        return image
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


@dataclass
class Section:
    """A titled part of the page; its blocks are HTML fragments, escaped on the way in."""

    id: str
    title: str
    blocks: list[str] = field(default_factory=list)

    def text(self, text: str, cls: str = "") -> Section:
        attr = f' class="{cls}"' if cls else ""
        self.blocks.append(f"<p{attr}>{html.escape(text)}</p>")
        return self

    def note(self, text: str) -> Section:
        return self.text(text, "note")

    def image(self, image: Image.Image | bytes, alt: str) -> Section:
        data = png(image)
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
        uri = base64.b64encode(data).decode("ascii")
        self.blocks.append(f'<img src="data:image/png;base64,{uri}" width="{w}" height="{h}" alt="{html.escape(alt)}">')
        return self

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> Section:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        thead = f"<thead><tr>{head}</tr></thead>" if any(headers) else ""
        body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
        self.blocks.append(f"<table>{thead}<tbody>{body}</tbody></table>")
        return self


def _cell(value: object) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f'<td class="num">{html.escape(str(value))}</td>'
    return f"<td>{html.escape(str(value))}</td>"


@dataclass
class Page:
    """The report page: a title, a subtitle and sections in order."""

    title: str
    subtitle: str = ""
    sections: list[Section] = field(default_factory=list)

    def section(self, id: str, title: str) -> Section:
        s = Section(id, title)
        self.sections.append(s)
        return s

    def render(self) -> str:
        nav = " ".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in self.sections)
        parts = [
            "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{html.escape(self.title)}</title><style>{STYLE}</style></head><body>",
            f"<h1>{html.escape(self.title)}</h1>",
            f'<p class="note">{html.escape(self.subtitle)}</p>' if self.subtitle else "",
            f"<nav>{nav}</nav>",
        ]  # fmt: skip
        for s in self.sections:
            parts.append(f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2>')
            parts.extend(s.blocks)
            parts.append("</section>")
        parts.append("</body></html>\n")
        return "\n".join(parts)
