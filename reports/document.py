"""A report as a list of sections, rendered to Markdown (figures beside it) and to one HTML file
(figures embedded as data URIs, styles inline: it opens offline, with no external URL)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    caption: str = ""
    muted: tuple[str, ...] = ()  # columns shown greyed (HTML) or in italics (Markdown): not findings


@dataclass
class Figure:
    png: Path
    svg: Path
    caption: str


@dataclass
class Section:
    title: str
    parts: list = field(default_factory=list)  # str (a paragraph), Table or Figure, in order
    level: int = 2


def _md_cell(text: str, muted: bool) -> str:
    escaped = text.replace("|", "\\|")
    return f"*{escaped}*" if muted and escaped.strip() not in ("", "–", "n/a") else escaped


def to_markdown(title: str, sections: list[Section], root: Path) -> str:
    lines = [f"# {title}", ""]
    for section in sections:
        lines += ["#" * section.level + f" {section.title}", ""]
        for part in section.parts:
            if isinstance(part, str):
                lines += [part, ""]
            elif isinstance(part, Table):
                if part.caption:
                    lines += [f"*{part.caption}*", ""]
                lines.append("| " + " | ".join(part.columns) + " |")
                lines.append("|" + "|".join(" --- " for _ in part.columns) + "|")
                muted = [c in part.muted for c in part.columns]
                lines += [
                    "| "
                    + " | ".join(_md_cell(cell, grey) for cell, grey in zip(row, muted, strict=False))
                    + " |"
                    for row in part.rows
                ]
                lines.append("")
            else:
                png, svg = part.png.relative_to(root), part.svg.relative_to(root)
                lines += [
                    f"![{part.caption}]({png.as_posix()})",
                    "",
                    f"*{part.caption}* ([SVG]({svg.as_posix()}))",
                    "",
                ]
    return "\n".join(lines)


STYLE = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2rem auto;
       max-width: 1200px; color: #1d232a; line-height: 1.45; padding: 0 1rem; }
h1 { border-bottom: 3px solid #2a6f97; padding-bottom: .3rem; }
h2 { margin-top: 2.2rem; border-bottom: 1px solid #d0d7de; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: .8rem 0 1.4rem; font-size: .9rem; }
th, td { border: 1px solid #d0d7de; padding: .3rem .6rem; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #eef3f7; }
tr:nth-child(even) td { background: #f8fafc; }
caption { caption-side: top; text-align: left; font-style: italic; padding-bottom: .3rem; }
figure { margin: 1rem 0 2rem; }
figure img { width: 100%; height: auto; border: 1px solid #e3e8ee; }
figcaption { font-style: italic; color: #4b5563; }
td.oom { color: #b42318; font-weight: 600; }
td.muted { color: #9aa5b1; }
"""


def _cell(text: str, muted: bool = False) -> str:
    """A table cell: numbers right-aligned, words left, failures in red, muted ones grey."""
    escaped = html.escape(text)
    if text.startswith(("OOM", "ERROR")):
        return f'<td class="oom">{escaped}</td>'
    numeric = text[:1].isdigit() or text in ("n/a", "–") or text[:1] in "-+"
    classes = " ".join(c for c, on in (("num", numeric), ("muted", muted and text not in ("–", "n/a"))) if on)
    return f'<td class="{classes}">{escaped}</td>' if classes else f"<td>{escaped}</td>"


def to_html(title: str, sections: list[Section]) -> str:
    body = [f"<h1>{html.escape(title)}</h1>"]
    for section in sections:
        body.append(f"<h{section.level}>{html.escape(section.title)}</h{section.level}>")
        for part in section.parts:
            if isinstance(part, str):
                body.append(f"<p>{html.escape(part)}</p>")
            elif isinstance(part, Table):
                head = "".join(f"<th>{html.escape(c)}</th>" for c in part.columns)
                muted = [c in part.muted for c in part.columns]
                rows = "".join(
                    "<tr>" + "".join(_cell(c, m) for c, m in zip(row, muted, strict=False)) + "</tr>"
                    for row in part.rows
                )
                caption = f"<caption>{html.escape(part.caption)}</caption>" if part.caption else ""
                body.append(f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            else:
                data = base64.b64encode(part.png.read_bytes()).decode()
                body.append(
                    f'<figure><img alt="{html.escape(part.caption)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{html.escape(part.caption)}</figcaption></figure>"
                )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
