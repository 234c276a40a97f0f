"""A report as a list of blocks, rendered twice: one self-contained HTML file and its Markdown twin.

HTML inlines everything (SVG charts as markup, images as data URIs, one small stylesheet),
so the file opens in any browser with no server and no internet. Markdown refers to the
same charts and images written beside it in ``report_files/``.
"""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from privmed import atomic

FILES = "report_files"


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str
    kind: str = ""  # "" or "warning"


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    frame: pd.DataFrame
    caption: str = ""


@dataclass(frozen=True)
class Chart:
    name: str  # file stem and the figure's data-chart attribute
    svg: str
    caption: str = ""


@dataclass(frozen=True)
class Picture:
    name: str
    png: bytes
    caption: str = ""


@dataclass(frozen=True)
class Details:
    summary: str
    blocks: tuple = field(default_factory=tuple)


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
.table{overflow-x:auto;max-width:100%}table{border-collapse:collapse;font-size:.85em;margin:.6em 0}
td.ci{white-space:nowrap}caption{text-align:left;caption-side:top;font-size:.95em;color:#555}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}figure svg{max-width:100%;height:auto}figcaption{font-size:.85em;color:#555}
.warning{background:#fff4e5;border-left:4px solid #e69500;padding:.4em .8em}
details{margin:.3em 0}summary{cursor:pointer}img{max-width:100%;image-rendering:pixelated}
"""


def to_html(title: str, blocks: list) -> str:
    """One self-contained HTML page."""
    body = "\n".join(_html(b) for b in blocks)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
            f"<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")


def to_markdown(title: str, blocks: list, files: Path) -> str:
    """Markdown; charts (SVG) and pictures (PNG) are written to ``files``."""
    files.mkdir(parents=True, exist_ok=True)
    return f"# {md_text(title)}\n\n" + "\n\n".join(_markdown(b, files) for b in blocks) + "\n"


#: characters that open inline Markdown (emphasis, code, links and images, strikethrough, table cells); ``_``
#: only where it can open or close emphasis (not inside a word: run ids like ``dp_sgd__eps1`` stay as they are)
_INLINE = re.compile(r"[\\`*\[\]~|]|_+")
#: what opens a block at a line's start: a heading, a setext underline or list item, an ordered list item
_BLOCK_MARK = re.compile(r"^( {0,3})([#=+-])", re.MULTILINE)
_ORDERED = re.compile(r"^( {0,3}\d{1,9})([.)])", re.MULTILINE)


def _md_inline(text) -> str:
    """HTML as text, Markdown punctuation escaped, ``://`` broken so no bare URL becomes a link."""
    text = html.escape(str(text), quote=False)

    def escape(match: re.Match) -> str:
        before, after = text[match.start() - 1:match.start()], text[match.end():match.end() + 1]
        if match.group()[0] == "_" and before.isalnum() and after.isalnum():
            return match.group()  # inside a word: cannot open or close emphasis
        return "".join("\\" + ch for ch in match.group())

    return _INLINE.sub(escape, text).replace("://", "\\://")


def md_text(text: str) -> str:
    """Text for Markdown, shown exactly as written and never rendered (descriptions, names, attribute values
    come from the user's files): no HTML, link, image, emphasis, code, heading or list can come of it."""
    return _ORDERED.sub(r"\1\\\2", _BLOCK_MARK.sub(r"\1\\\2", _md_inline(text)))


def md_cell(text: str) -> str:
    """:func:`md_text` for a table cell: on one line, ``|`` kept as text."""
    return _md_inline(text).replace("\r", " ").replace("\n", " ")


def format_value(value) -> str:
    """Numbers to 3 decimals, NaN as an empty cell, everything else as text."""
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return "∞" if math.isinf(value) else f"{value:.3f}"
    return str(value)


def _html(block) -> str:
    if isinstance(block, Heading):
        return f"<h{block.level}>{html.escape(block.text)}</h{block.level}>"
    if isinstance(block, Paragraph):
        cls = f' class="{block.kind}"' if block.kind else ""
        return f"<p{cls}>{html.escape(block.text)}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in block.items) + "</ul>"
    if isinstance(block, Table):
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in block.frame.columns)
        cells = [' class="ci"' if "CI" in str(c) else "" for c in block.frame.columns]  # intervals never wrap
        rows = "".join("<tr>" + "".join(f"<td{cls}>{html.escape(format_value(v))}</td>" for cls, v in zip(cells, row))
                       + "</tr>" for row in block.frame.itertuples(index=False))
        caption = f"<caption>{html.escape(block.caption)}</caption>" if block.caption else ""
        return (f'<div class="table"><table>{caption}<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'
                f"</div>")
    if isinstance(block, Chart):
        return (f'<figure class="chart" data-chart="{html.escape(block.name)}">{block.svg}'
                f"<figcaption>{html.escape(block.caption)}</figcaption></figure>")
    if isinstance(block, Picture):
        data = base64.b64encode(block.png).decode()
        return (f'<figure class="picture"><img alt="{html.escape(block.name)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(block.caption)}</figcaption></figure>")
    if isinstance(block, Details):
        inner = "\n".join(_html(b) for b in block.blocks)
        return f"<details><summary>{html.escape(block.summary)}</summary>{inner}</details>"
    raise TypeError(f"unknown report block {block!r}")


def _markdown(block, files: Path) -> str:
    if isinstance(block, Heading):
        return "#" * block.level + " " + md_text(block.text)
    if isinstance(block, Paragraph):
        return f"> **Note:** {md_text(block.text)}" if block.kind == "warning" else md_text(block.text)
    if isinstance(block, Bullets):
        return "\n".join(f"- {md_text(i)}" for i in block.items)
    if isinstance(block, Table):
        cells = [[md_cell(format_value(v)) for v in row] for row in block.frame.itertuples(index=False)]
        lines = ["| " + " | ".join(md_cell(str(c)) for c in block.frame.columns) + " |",
                 "|" + "|".join("---" for _ in block.frame.columns) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in cells]
        return (f"*{md_text(block.caption)}*\n\n" if block.caption else "") + "\n".join(lines)
    if isinstance(block, Chart):
        atomic.write_text(files / f"{block.name}.svg", block.svg)
        return f"![{md_text(block.caption)}]({files.name}/{block.name}.svg)\n\n*{md_text(block.caption)}*"
    if isinstance(block, Picture):
        atomic.write_bytes(files / f"{block.name}.png", block.png)
        return f"![{md_text(block.caption)}]({files.name}/{block.name}.png)\n\n*{md_text(block.caption)}*"
    if isinstance(block, Details):
        return f"**{md_text(block.summary)}**\n\n" + "\n\n".join(_markdown(b, files) for b in block.blocks)
    raise TypeError(f"unknown report block {block!r}")
