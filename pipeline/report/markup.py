"""Text shown as text in every format the report writes: escaped by default, by construction.

A report's strings come from places anyone can type into: a profile's name, a grid's title, a
committed reference's provenance (someone else's archive), the paper's CSV files. None of them
may become markup. So each format has one function that turns any value into its plain-text
form, and the writers pass every string through it:

* HTML: ``Markup`` marks the fragments this package writes; ``markup(template, *args)`` escapes
  every argument that is not one; ``table`` escapes every header and cell; a page is joined by
  ``join``, which escapes any part that is not ``Markup``.
* Markdown: ``md_text`` (no HTML, links, emphasis or code spans; a leading block marker escaped
  where the text starts a line).
* LaTeX: ``tex_text`` (every special character, and no blank line, which ends a caption).
* Figures: ``plain_figures`` turns matplotlib's mathtext and TeX off, so that ``$`` is a dollar.

Every format also gets the text on one line: a newline or control character in a title becomes a
space (a blank line would end a LaTeX caption or split a Markdown heading).
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable

import pandas as pd

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def one_line(value) -> str:
    """``value`` as text on one line: control characters and line breaks become spaces, runs of
    spaces one."""
    return "" if value is None else " ".join(_CONTROL.sub(" ", str(value)).split())


# --- HTML -----------------------------------------------------------------------------------------
class Markup(str):
    """HTML this package wrote: joined as is. Any other string is text, and is escaped."""


def escape(value) -> Markup:
    """``value`` as HTML: itself where it is ``Markup``, else its text escaped (quotes too, so that
    it is safe inside an attribute)."""
    return value if isinstance(value, Markup) else Markup(html.escape(one_line(value), quote=True))


def markup(template: str, *args, **kwargs) -> Markup:
    """``template``, HTML of this package, filled with ``args`` escaped (``escape``)."""
    return Markup(template.format(*map(escape, args), **{k: escape(v) for k, v in kwargs.items()}))


def join(parts: Iterable, sep: str = "\n") -> Markup:
    """The parts of a page, each escaped unless ``Markup``."""
    return Markup(sep.join(map(escape, parts)))


def table(df: pd.DataFrame) -> Markup:
    """A table of ``df``'s columns and rows, every header and cell escaped unless ``Markup``. A column
    of strings becomes pandas' string dtype, which drops the mark: a frame with ``Markup`` cells is
    built with ``dtype=object``."""
    head = "".join(markup("<th>{}</th>", column) for column in df.columns)
    rows = ["<tr>" + "".join(markup("<td>{}</td>", _cell(v)) for v in row) + "</tr>" for row in df.itertuples(index=False)]
    return Markup(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _cell(value):
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else value


# --- Markdown -------------------------------------------------------------------------------------
# a ']' opening a link's target or a reference ('[a](b)', '[a][b]', '[a]: b') is escaped, not every bracket:
# an interval '[0.1, 0.2]' stays readable in the file
_MD = re.compile(r"[\\`*_~|<>&]|\](?=[(\[:])")
_MD_ENTITY = {"<": "&lt;", ">": "&gt;", "&": "&amp;"}
_MD_BLOCK = re.compile(r"^(\d*)([-+*#>=.)])")  # a line of '- ', '# ', '> ', '1. ': a block


def md_text(value, line_start: bool = False) -> str:
    """``value`` as Markdown that shows exactly its text; ``line_start``: it begins a line (a
    heading's text, a caption), where '- ', '1. ' or '> ' would start a block."""
    text = _MD.sub(lambda m: _MD_ENTITY.get(m[0], "\\" + m[0]), one_line(value))
    block = _MD_BLOCK.match(text) if line_start else None
    if block and (not block[1] or block[2] in ".)"):  # the marker escaped; a backslash before a digit would show
        text = f"{block[1]}\\{text[len(block[1]) :]}"
    return text


# --- LaTeX ----------------------------------------------------------------------------------------
_TEX = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "−": "$-$", "σ": r"$\sigma$",
}  # fmt: skip


def tex_text(value) -> str:
    """``value`` as LaTeX that shows exactly its text, on one line."""
    return "".join(_TEX.get(c, c) for c in one_line(value))


# --- figures --------------------------------------------------------------------------------------
def plain_figures() -> None:
    """Matplotlib without a display, drawing every string as the text it is: mathtext off (a '$'
    in a title is a dollar, not a formula that may fail to parse) and TeX never run."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams.update({"text.parse_math": False, "text.usetex": False})
