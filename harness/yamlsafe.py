"""YAML from users, read with limits: a scenario, objectives or drill file, or a ``--set``
value, is data a person wrote, so it is parsed as plain data and nothing more.

- at most ``MAX_BYTES`` (1 MiB) of text and ``MAX_NODES`` values: a scenario is a few KiB;
- no aliases (``*name``): a 374-byte alias bomb expands to millions of nodes, and
  nothing a scenario says needs one (anchors alone are harmless and ignored);
- no merge keys (``<<``): without aliases they only hide which value applies;
- nesting at most ``MAX_DEPTH`` deep: a 20,000-deep list would exhaust Python's stack;
- each key once per mapping: a second ``users:`` silently replacing the first is a
  mistake, refused naming the key.

Every refusal is a :class:`YamlInputError` (a ``ValueError``) whose message names the
source, the key path when there is one, and the line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode

MAX_BYTES = 1024 * 1024
MAX_DEPTH = 32
MAX_NODES = 10_000
_MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlInputError(ValueError):
    """YAML a user gave is unreadable, invalid or over a limit; the message names its
    source (a file, or a flag like ``--set load.users``), the key path and the line."""


class _Refused(yaml.YAMLError):
    def __init__(self, message: str, mark: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark

    def __str__(self) -> str:
        where = f" (line {self.mark.line + 1}, column {self.mark.column + 1})" if self.mark else ""
        return self.message + where


class LimitedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with the limits of this module; keeps the key path it is in."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._path: list[str] = []
        self._depth = 0
        self._nodes = 0

    def _where(self, extra: str | None = None) -> str:
        parts = [*self._path, *([extra] if extra is not None else [])]
        return ".".join(parts) if parts else "the top level"

    def compose_node(self, parent: Node | None, index: Any) -> Node:  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _Refused(
                f"{self._where()}: alias *{event.anchor} refused: aliases are not allowed "
                "(write the value out)",
                event.start_mark,
            )
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _Refused(
                f"{self._where()}: more than {MAX_NODES} values; a scenario is far smaller",
                self.peek_event().start_mark,
            )
        if parent is None:
            segment = None
        elif isinstance(index, ScalarNode):
            segment = str(index.value)
        elif isinstance(index, int) and not isinstance(index, bool):
            segment = str(index)
        elif index is None:  # a key being composed
            segment = None
        else:
            segment = "?"
        if self._depth >= MAX_DEPTH:
            raise _Refused(
                f"{self._where()}: nested more than {MAX_DEPTH} levels deep",
                self.peek_event().start_mark,
            )
        self._depth += 1
        if segment is not None:
            self._path.append(segment)
        try:
            node: Any = super().compose_node(parent, index)  # type: ignore[arg-type]
        finally:
            self._depth -= 1
            if segment is not None:
                self._path.pop()
        if isinstance(node, MappingNode):
            node.harness_path = ".".join([*self._path, *([segment] if segment else [])])  # type: ignore[attr-defined]
        return node

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:  # type: ignore[override]
        prefix = getattr(node, "harness_path", "")
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                raise _Refused(
                    f"{prefix + '.' if prefix else ''}<<: merge keys are not allowed "
                    "(write the keys out)",
                    key_node.start_mark,
                )
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                continue  # an unhashable key: SafeConstructor refuses it below
            if duplicate:
                dotted = f"{prefix}.{key}" if prefix else str(key)
                raise _Refused(
                    f"{dotted}: duplicate key (each key may appear once in a mapping; the "
                    "later value would silently replace the earlier)",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as exc:
            # a scalar YAML resolves but Python cannot build: 2024-02-30, a 5000-digit int
            raise _Refused(f"a value cannot be read: {exc}", node.start_mark) from None


def load_yaml_text(text: str | bytes, source: str) -> Any:
    """Parse ``text`` with the limits; ``source`` names it in errors (a path, ``--set x``)."""
    if len(text) > MAX_BYTES:
        raise YamlInputError(f"{source}: larger than {MAX_BYTES // 1024} KiB; not a scenario")
    loader = None
    try:
        loader = LimitedLoader(text)
        return loader.get_single_data()
    except _Refused as exc:
        raise YamlInputError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        raise YamlInputError(f"{source}: not valid YAML: {exc}") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise YamlInputError(f"{source}: cannot be read as YAML ({_plain(exc)})") from None
    finally:
        if loader is not None:
            loader.dispose()


def load_yaml_file(path: Path) -> Any:
    """Read a YAML file a user named: at most ``MAX_BYTES``, a regular readable file."""
    if path.is_dir():
        raise YamlInputError(f"{path}: is a directory, not a YAML file")
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise YamlInputError(f"{path}: no such file") from None
    except OSError as exc:
        raise YamlInputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:  # a path with a NUL byte
        raise YamlInputError(f"{path!r}: not a usable path: {exc}") from None
    if len(data) > MAX_BYTES:
        raise YamlInputError(f"{path}: larger than {MAX_BYTES // 1024} KiB; not a scenario")
    return load_yaml_text(data, str(path))


def _plain(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
