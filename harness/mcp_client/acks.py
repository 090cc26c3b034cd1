"""When a write tool's result is an acknowledgement: the scenario's ``ledger.success_when``
judged on a result, the same way in the Locust users, the probes and the tests.

Plain data and pure functions, no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from harness.mcp_client.wire import ErrorKind, JsonObject, McpOutcome, McpRequest

_MISSING = object()

ACK_RULE_KEYS = ("equals", "not_false", "absent", "text_not_matching")


@dataclass(frozen=True)
class AckRule:
    """When a write tool's result is an acknowledgement: the scenario's
    ``ledger.success_when`` (``harness.config.SuccessRule``) as plain data.

    Plain data so that the Locust workers, which read it from the load settings, import
    no pydantic; ``of`` takes a ``SuccessRule`` (or anything with its four attributes, or
    a mapping of them). The defaults are ``SuccessRule``'s.

    Which calls it judges: only the ledger's write tool (a user's ``create_note``
    operation, the service probe's write). Those are the calls that make
    acknowledgements, and their result shape is what the scenario describes; the other
    tools (get_note, search_notes, ...) return shapes nothing here knows (a note with a
    member called ``error`` or ``ok`` is data, not a verdict), so they keep the
    ``isError`` and JSON-RPC error rules only.
    """

    equals: tuple[tuple[str, Any], ...] = ()
    """(dotted path, value): members that must be present with exactly this value."""
    not_false: tuple[str, ...] = ("success", "ok")
    """Members (dotted paths) that, when present, must not be ``false``."""
    absent: tuple[str, ...] = ("error",)
    """Members (dotted paths) that must be absent, null, false or empty."""
    text_not_matching: str | None = None
    """A regular expression no text content item may match (searched, any case)."""

    def __post_init__(self) -> None:
        if self.text_not_matching is not None:
            try:
                re.compile(self.text_not_matching)
            except re.error as exc:
                raise ValueError(f"text_not_matching is not a regular expression: {exc}") from None

    @classmethod
    def of(cls, rule: Any) -> AckRule:
        """From a ``SuccessRule``, an ``AckRule`` or a mapping with (some of) its keys."""
        if isinstance(rule, AckRule):
            return rule
        if isinstance(rule, Mapping):
            unknown = sorted(set(rule) - set(ACK_RULE_KEYS))
            if unknown:
                raise ValueError(f"unknown success rule keys {unknown}; known: {ACK_RULE_KEYS}")
            fields = dict(rule)
        else:
            fields = {key: getattr(rule, key) for key in ACK_RULE_KEYS if hasattr(rule, key)}
        default = cls()
        equals = fields.get("equals", dict(default.equals))
        return cls(
            equals=tuple(dict(equals).items()),
            not_false=tuple(fields.get("not_false", default.not_false)),
            absent=tuple(fields.get("absent", default.absent)),
            text_not_matching=fields.get("text_not_matching", default.text_not_matching),
        )

    def as_dict(self) -> JsonObject:
        """The rule as JSON data, in ``SuccessRule``'s shape (``of`` reads it back)."""
        return {
            "equals": dict(self.equals),
            "not_false": list(self.not_false),
            "absent": list(self.absent),
            "text_not_matching": self.text_not_matching,
        }


def result_json(result: Mapping[str, Any]) -> JsonObject | None:
    """The JSON a success rule reads in a tools/call result: ``structuredContent`` when it
    is an object, else the first text content item parsed as a JSON object, else None."""
    structured = result.get("structuredContent")
    if isinstance(structured, dict):
        return structured
    for text in _result_texts(result):
        try:
            decoded = json.loads(text)
        except ValueError:
            return None
        return decoded if isinstance(decoded, dict) else None
    return None


def ack_failure(result: Mapping[str, Any], rule: AckRule) -> str | None:
    """Why a write tool's ``result`` is not an acknowledgement under ``rule``; None if it is.

    ``isError`` and JSON-RPC errors are judged before (``outcome_of``); this reads the
    result's JSON (``result_json``). Without one (the text is not a JSON object) only
    ``text_not_matching`` can fail the result, as ``SuccessRule`` says.
    """
    data = result_json(result)
    if data is not None:
        for path, expected in rule.equals:
            value = _member(data, path)
            if value is _MISSING:
                return f"{path} is missing (expected {_short(expected)})"
            if not _same(value, expected):
                return f"{path} is {_short(value)}, not {_short(expected)}"
        for path in rule.not_false:
            if _member(data, path) is False:
                return _with_error(f"{path} is false", data)
        for path in rule.absent:
            value = _member(data, path)
            if value is not _MISSING and not _empty(value):
                return f"{path}: {_short(value)}"
    if rule.text_not_matching is not None:
        pattern = re.compile(rule.text_not_matching, re.IGNORECASE)
        for text in _result_texts(result):
            match = pattern.search(text)
            if match is not None:
                return f"text matches {rule.text_not_matching!r}: {_short(text)}"
    return None


def ack_rule_for(request: McpRequest, write_tool: str, rule: AckRule) -> AckRule | None:
    """The success rule the reply to ``request`` is judged by: ``rule`` for a call of the
    write tool (``write_tool``, the scenario's ``ledger.tool``), None for anything else
    (other tools keep the ``isError`` and JSON-RPC error rules; see ``AckRule``)."""
    if request.method == "tools/call" and request.stats_name == f"tools/call:{write_tool}":
        return rule
    return None


def judge_ack(outcome: McpOutcome, rule: AckRule | None) -> McpOutcome:
    """``outcome`` of a write tool call, judged by ``rule`` too (None: not judged).

    A successful reply whose result fails the rule becomes a ``tool_error``: a request
    error that is not an acknowledgement and does not break the session.
    """
    if rule is None or not outcome.ok or outcome.response is None:
        return outcome
    failure = ack_failure(outcome.result, rule)
    if failure is None:
        return outcome
    return replace(outcome, error_kind=ErrorKind.TOOL_ERROR, detail=failure)


def _result_texts(result: Mapping[str, Any]) -> Iterator[str]:
    content = result.get("content")
    for item in content if isinstance(content, list) else []:
        if isinstance(item, dict) and item.get("type", "text") == "text":
            text = item.get("text")
            if isinstance(text, str):
                yield text


def _member(data: Mapping[str, Any], path: str) -> Any:
    """``data[path]``, or the member at the dotted ``path`` (``a.b``); ``_MISSING`` if absent."""
    if path in data:
        return data[path]
    value: Any = data
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _same(value: Any, expected: Any) -> bool:
    """JSON equality: ``true`` is not ``1`` (Python says it is), ``1`` is ``1.0``."""
    if isinstance(value, bool) or isinstance(expected, bool):
        return isinstance(value, bool) and isinstance(expected, bool) and value == expected
    return bool(value == expected)


def _empty(value: Any) -> bool:
    """Null, false or empty (``""``, ``[]``, ``{}``); ``0`` is a value."""
    return value is None or value is False or (isinstance(value, (str, list, dict)) and not value)


def _with_error(detail: str, data: Mapping[str, Any]) -> str:
    for key in ("error", "message"):
        if data.get(key):
            return f"{detail}: {_short(data[key])}"
    return detail


def _short(value: Any, limit: int = 200) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."
