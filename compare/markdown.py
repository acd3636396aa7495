"""The markdown subset of reports, rendered to HTML (text escaped, never run), and the page style."""

from __future__ import annotations

import base64
import html
import re
from typing import Mapping

__all__ = ["markdown_to_html", "html_page", "CSS"]

_INLINE = [
    (re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
    (re.compile(r"\*\*([^*]+)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"(?<![*\w])\*([^*\s][^*]*)\*(?![*\w])"), r"<em>\1</em>"),
    (re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)"), r'<a href="\2">\1</a>'),
]


def _inline(text: str) -> str:
    s = html.escape(text, quote=False)
    for pat, rep in _INLINE:
        s = pat.sub(rep, s)
    return s


def markdown_to_html(md: str, images: Mapping[str, str] | None = None) -> str:
    """The markdown subset reports use: headings, paragraphs, pipe tables,
    bullet lists, fenced code and images (``![cap](file.png)`` → inline
    base64 from ``images`` {file: data URI}). Text is escaped, never run.
    """
    images = images or {}
    lines = md.splitlines()
    out: list[str] = []
    i = 0
    para: list[str] = []

    def flush():
        if para:
            out.append("<p>" + _inline(" ".join(para)) + "</p>")
            para.clear()

    img_re = re.compile(r"^!\[([^\]]*)\]\(([^)]+)\)\s*$")
    while i < len(lines):
        ln = lines[i]
        st = ln.strip()
        if st.startswith("```"):
            flush()
            j = i + 1
            code = []
            while j < len(lines) and not lines[j].strip().startswith("```"):
                code.append(lines[j])
                j += 1
            out.append("<pre><code>" + html.escape("\n".join(code)) + "</code></pre>")
            i = j + 1
            continue
        if not st:
            flush()
            i += 1
            continue
        m = re.match(r"^(#{1,6})\s+(.*)$", st)
        if m:
            flush()
            lv = len(m.group(1))
            out.append(f"<h{lv}>{_inline(m.group(2))}</h{lv}>")
            i += 1
            continue
        m = img_re.match(st)
        if m:
            flush()
            cap, src = m.group(1), m.group(2)
            uri = images.get(src, src)
            out.append(f'<figure><img src="{html.escape(uri)}" alt="{html.escape(cap)}">'
                       f"<figcaption>{_inline(cap)}</figcaption></figure>")
            i += 1
            continue
        if st.startswith("|") and i + 1 < len(lines) and re.match(r"^\|?\s*:?-{3,}", lines[i + 1].strip()):
            flush()
            head = [c.strip() for c in st.strip("|").split("|")]
            rows = []
            j = i + 2
            while j < len(lines) and lines[j].strip().startswith("|"):
                rows.append([c.strip() for c in lines[j].strip().strip("|").split("|")])
                j += 1
            t = ["<table>", "<thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr></thead>", "<tbody>"]
            for r in rows:
                t.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>")
            t.append("</tbody></table>")
            out.append("\n".join(t))
            i = j
            continue
        if re.match(r"^[-*]\s+", st):
            flush()
            items = []
            j = i
            while j < len(lines) and re.match(r"^\s*[-*]\s+", lines[j]):
                items.append(re.sub(r"^\s*[-*]\s+", "", lines[j]))
                j += 1
            out.append("<ul>" + "".join(f"<li>{_inline(it)}</li>" for it in items) + "</ul>")
            i = j
            continue
        para.append(st)
        i += 1
    flush()
    return "\n".join(out)


CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #eee; padding-bottom: .15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f4f4f4; }
td:first-child, th:first-child { text-align: left; }
code { background: #f4f4f4; padding: 0 .2em; }
pre { background: #f6f6f6; padding: .6em; overflow-x: auto; font-size: 0.85em; }
figure { margin: 1em 0; } img { max-width: 100%; } figcaption { color: #555; font-size: .9em; }
"""


def html_page(title: str, md: str, images: Mapping[str, bytes] | None = None) -> str:
    """A self-contained HTML page of the markdown ``md``: images (PNG/GIF bytes by file name) inline."""
    uris = {n: f"data:image/{'gif' if n.endswith('.gif') else 'png'};base64," + base64.b64encode(b).decode("ascii")
            for n, b in (images or {}).items()}
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>\n{markdown_to_html(md, uris)}\n</body></html>\n")
