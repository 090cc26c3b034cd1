"""Secrets out of everything the harness shows or keeps: ``redact(text)``.

One function for every output: the console, result.json (notes, doubts, everything),
junit.xml, summary.md, report.html, the drill's files, and the process logs copied into a
run's results (``copy_redacted``, line by line). It replaces the secret and keeps its
name, so a reader still sees that a password was there and which:

- URL user info: ``postgresql://app:s3cret@host/db`` -> ``postgresql://app:***@host/db``
- URL query parameters: ``?password=s3cret&sslmode=require`` -> ``?password=***&sslmode=require``
- ``key=value`` / ``key: value`` pairs whose key names a secret (``password``,
  ``PGPASSWORD``, ``sslpassword``, ``MCP_ADMIN_TOKEN``, ``client_secret``, ``api_key`` ...):
  libpq DSNs (``password='se cret'``, quoted with ``\\'`` escapes), environment dumps,
  YAML, JSON (``"password": "x"``, also escaped inside another JSON string), Python reprs
- ``Authorization: Bearer <token>`` (any scheme) and a ``Bearer <token>`` on its own

A key must be followed by ``=`` or ``:`` to count, so prose ("password policy",
"password authentication failed") is left alone. A value that cannot be delimited (an
unterminated quote) is redacted to the end of its line: a leak costs more than a
line's worth of lost context.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

MASK = "***"

_SECRET_WORD = (
    r"(?:password|passwd|passphrase|pwd|secret|token|api[_-]?key|access[_-]?key"
    r"|private[_-]?key|credentials?)"
)
_KEY = rf"[\w.-]*?{_SECRET_WORD}"
"""A key naming a secret: it ends with a secret word (``PGPASSWORD``, ``admin_token``);
``password_file``, ``max_tokens`` and ``passwords`` do not."""

_SECRET_KEY = re.compile(rf"(?i)(?:{_KEY}|(?:proxy-)?authorization)")
"""A whole key (a dict key, a header name) whose value is a secret."""

_VALUE = r"""(?:
      \\"(?:[^\\\n]|\\(?!"))*\\"        # "\"secret\"", a JSON string inside a JSON string
    | "(?:[^"\\\n]|\\.)*"               # "secret" (JSON, YAML, Python)
    | '(?:[^'\\\n]|\\.)*'               # 'se cret' (libpq, with \' escapes; Python, shell)
    | \\?["'][^\n]*                     # an unterminated quote: the rest of the line
    | [^\s"']+                          # bare: up to whitespace or a quote
)"""

_URL_USERINFO = re.compile(r"(://[^:/?#@\s'\"]*:)[^\s/'\"]*@")
"""``scheme://user:secret@`` (the password may hold ``@`` ``:`` ``?``: up to the last ``@``
before the path)."""

_QUERY = re.compile(rf"(?ix)([?&;]{_KEY}=)[^&#;\s'\"]*")
"""``?password=secret&next=...``: the value ends at the next parameter."""

_PAIR = re.compile(
    rf"""(?ix)
    (
        (?<![\w.?&;-])(?:{_KEY})          # the key, not one inside a longer word
        (?:\\?["'])?                      # the closing quote of a quoted key
        [ \t]*[:=][ \t]*                  # = or :, on the same line
    )
    (?P<value>{_VALUE})
    """
)

_AUTHORIZATION = re.compile(
    r"""(?ix)
    (
        authorization
        (?:\\?["'])?[ \t]*[:=][ \t]*(?:\\?["'])?
        (?:(?:bearer|basic|token|digest|negotiate)[ \t]+)?
    )
    [^\s"',;\\]+
    """
)

_BEARER = re.compile(r"(?i)\b(bearer[ \t]+)[A-Za-z0-9._~+/-]{8,}=*")
"""A bearer token on its own (a header printed as a tuple, an error message); eight
characters at least, so "bearer of bad news" stays."""

_QUOTE = re.compile(r"\\?[\"']")


def _masked_pair(match: re.Match[str]) -> str:
    """The key as it was; a quoted value keeps its quotes (JSON stays JSON)."""
    quote = _QUOTE.match(match["value"])
    if quote is None:
        return match[1] + MASK
    closed = match["value"].endswith(quote[0]) and len(match["value"]) > len(quote[0])
    return match[1] + quote[0] + MASK + (quote[0] if closed else "")


_PATTERNS: tuple[tuple[re.Pattern[str], Any], ...] = (
    (_URL_USERINFO, rf"\g<1>{MASK}@"),
    (_AUTHORIZATION, rf"\g<1>{MASK}"),
    (_QUERY, rf"\g<1>{MASK}"),
    (_PAIR, _masked_pair),
    (_BEARER, rf"\g<1>{MASK}"),
)


def redact(text: str) -> str:
    """``text`` with every secret it shows replaced by ``***`` (idempotent)."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def is_secret_key(key: str) -> bool:
    """A mapping key whose value is a secret (``password``, ``Authorization``, ...)."""
    return _SECRET_KEY.fullmatch(key.strip()) is not None


def redact_data(data: Any) -> Any:
    """A copy of JSON-like data with every string redacted; a value under a key that names
    a secret (``{"password": "x"}``, ``{"Authorization": "Bearer x"}``) becomes ``***``."""
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, Mapping):
        out = {}
        for key, value in data.items():
            name = redact(key) if isinstance(key, str) else key
            secret = isinstance(key, str) and is_secret_key(key)
            out[name] = MASK if secret and isinstance(value, str) and value else redact_data(value)
        return out
    if isinstance(data, (list, tuple)):
        return [redact_data(item) for item in data]
    return data


# -- streams ---------------------------------------------------------------------------

CHUNK_CHARS = 64 * 1024
"""A line longer than this is redacted in pieces."""
OVERLAP_CHARS = 1024
"""A piece keeps this much of its end for the next one, so no secret is cut in two: more
than a key's separator and the few characters a value needs to be recognised."""
HELD_CHUNKS = 16
"""A piece is held back while a secret runs through it, up to this many chunks (memory
stays bounded); a secret longer than that is masked with the rest of its line."""


def _secret_spans(text: str) -> Iterable[tuple[int, int]]:
    for pattern, _ in _PATTERNS:
        for match in pattern.finditer(text):
            yield match.start(), match.end()


def _safe_cut(text: str, cut: int) -> int:
    """The largest point at or before ``cut`` that no secret spans (0: none)."""
    spans = list(_secret_spans(text))
    while cut > 0 and (hit := [start for start, end in spans if start < cut < end]):
        cut = min(hit)
    return cut


def redact_stream(
    source: IO[str],
    sink: IO[str],
    *,
    chunk_chars: int = CHUNK_CHARS,
    overlap_chars: int = OVERLAP_CHARS,
) -> None:
    """Copy ``source`` to ``sink`` line by line, each line redacted. A line longer than
    ``chunk_chars`` goes in pieces, each cut where no secret is, so memory stays bounded:
    at most ``HELD_CHUNKS`` chunks are held while one secret runs on; past that the line's
    rest is masked."""
    pending = ""
    skipping = False
    """A secret ran past what may be held: drop the rest of its line."""
    while piece := source.readline(chunk_chars):
        if skipping:
            if not piece.endswith("\n"):
                continue
            piece, skipping = "\n", False
        pending += piece
        if pending.endswith("\n"):
            sink.write(redact(pending))
            pending = ""
        elif len(pending) >= chunk_chars + overlap_chars:
            cut = _safe_cut(pending, len(pending) - overlap_chars)
            if cut > 0:
                sink.write(redact(pending[:cut]))
                pending = pending[cut:]
            elif len(pending) >= HELD_CHUNKS * chunk_chars:
                sink.write(redact(pending) + f" {MASK} (line cut: a secret ran on)")
                pending, skipping = "", True
    if pending:
        sink.write(redact(pending))


def copy_redacted(source: Path, target: Path) -> Path:
    """``shutil.copy2`` with every line redacted: a process log copied into the results.
    Bytes that are not UTF-8 are kept as they were."""
    tmp = target.with_name(target.name + ".tmp")
    with (
        open(source, encoding="utf-8", errors="surrogateescape", newline="") as reader,
        open(tmp, "w", encoding="utf-8", errors="surrogateescape", newline="") as writer,
    ):
        redact_stream(reader, writer)
    shutil.copystat(source, tmp)
    os.replace(tmp, target)
    return target
