"""Text from a run, made safe for the output it goes to.

Scenario names and descriptions, notes, doubts, tool errors, fault details, error kinds:
anything a run or the server under test produced is data, never markup or a terminal
command. Every renderer passes it through here:

- ``plain``: secrets redacted (``harness.redaction.redact``) and every control character
  shown as an escape (``\\x1b``) instead of sent: no ANSI/OSC sequence reaches a terminal,
  no character XML 1.0 forbids reaches junit.xml. ``plain_data`` does it to a whole result.
- ``markup``: for Rich markup strings (``rich.markup.escape`` of the plain text).
- ``markdown``: for summary.md and drill.md, which GitHub renders (``$GITHUB_STEP_SUMMARY``):
  ``<`` and ``&`` as entities, Markdown's inline punctuation backslash-escaped, one line.
- HTML: ``html.escape`` of the plain text (``report.html``, ``drill.html``).

``output_console`` is the one Rich console every command prints through.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.markup import escape as rich_escape

from harness.redaction import redact

_UNSAFE = re.compile(
    "[\x00-\x08\x0b\x0c\x0d\x0e-\x1f\x7f-\x9f"  # C0 (but tab, newline), DEL, C1
    "\u200e\u200f\u202a-\u202e\u2066-\u2069"  # bidirectional overrides
    "\ud800-\udfff\ufffe\uffff]"  # lone surrogates, non-characters: not XML 1.0
)


def _shown(match: re.Match[str]) -> str:
    code = ord(match[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """Every control character as a visible escape; tab and newline kept (CRLF as LF)."""
    return _UNSAFE.sub(_shown, text.replace("\r\n", "\n"))


def plain(text: Any) -> str:
    """Text from the run, fit for any output: secrets redacted, control characters shown."""
    return printable(redact(str(text)))


def plain_data(data: Any) -> Any:
    """A copy of a result (or drill) with ``plain`` applied to every string, keys included."""
    if isinstance(data, str):
        return plain(data)
    if isinstance(data, Mapping):
        return {plain(k) if isinstance(k, str) else k: plain_data(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [plain_data(item) for item in data]
    return data


def markup(text: Any) -> str:
    """For a Rich markup string: plain, with ``[`` escaped."""
    return rich_escape(plain(text))


_MD_INLINE = re.compile(r"[\\`*\[~]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
"""Backslash, code, emphasis, links and images (``[``: a lone ``]`` opens nothing),
strikethrough; ``_`` inside a word (``failover_s``) is not emphasis and stays."""
_MD_BLOCK_START = re.compile(r"^(?:>|[#+=-]+(?=\s|$)|\d{1,9}(?=[.)](?:\s|$)))")
"""What would open a heading, a quote, a list or a rule at the start of a list item."""
_MD_HTML = {"&": "&amp;", "<": "&lt;"}
"""Only ``<`` opens HTML (a tag, a comment, an autolink); ``&`` an entity."""


def markdown(text: Any, *, cell: bool = False) -> str:
    """Text from the run as Markdown that renders as that text: plain, on one line, no
    HTML (``<`` and ``&`` as entities), no inline markup (backslash escapes); in a table
    ``cell``, ``|`` escaped too."""
    out = " ".join(plain(text).split())
    out = "".join(_MD_HTML.get(c, c) for c in out)
    out = _MD_INLINE.sub(lambda m: "\\" + m[0], out)
    block = _MD_BLOCK_START.match(out)
    if block:
        end = block.end()
        out = (out[:end] + "\\" + out[end:]) if out[0].isdigit() else "\\" + out
    return out.replace("|", "\\|") if cell else out


_CODE_SAFE = re.compile(r"[\w.:+@/-]+")


def code(text: Any, *, cell: bool = False) -> str:
    """A Markdown code span when the text is an identifier-like word (a run id), escaped
    text otherwise: a code span shows ``<`` and backticks literally but cannot escape them."""
    shown = plain(text)
    return f"`{shown}`" if _CODE_SAFE.fullmatch(shown) else markdown(shown, cell=cell)


LOG_WIDTH = 240
"""Columns of output that is not a terminal (a CI log, a file): wide enough for a path."""


def output_console(*, stderr: bool = False) -> Console:
    """A console for people and CI logs alike: in a terminal as Rich sizes it; in a file
    or a CI log no wrapping at 80 columns (a result path split over two lines cannot be
    copied). Never the source-location column Rich puts on log lines."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr, log_path=False)
    return Console(stderr=stderr, log_path=False, soft_wrap=True, width=LOG_WIDTH)
