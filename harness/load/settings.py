"""Settings of the load, handed from the harness to its Locust processes.

They cross a process boundary (and possibly a machine), so they are plain data
written as a JSON file whose path the Locust processes find in the environment
variable ``MCP_HARNESS_LOAD``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

from harness import reference
from harness.load.policy import POLICY_NAMES, PolicyName, ReconnectPolicy
from harness.mcp_client.acks import AckRule
from harness.mcp_client.wire import PROTOCOL_2025_11_25, SUPPORTED_PROTOCOLS
from harness.mcp_client.writes import WriteTemplate

SETTINGS_ENV = "MCP_HARNESS_LOAD"

FINAL_BATCH_GRACE_S = 5.0
"""How long the master waits for workers' final batches of records beyond the stop timeout."""

RECONNECT_POLICIES: tuple[PolicyName, ...] = POLICY_NAMES

USER_ID_STRIDE = 1_000_000
"""User ids in records are ``worker_index * USER_ID_STRIDE + n``: unique within a run, and
the worker that ran a user is ``u // USER_ID_STRIDE``."""

OPS = reference.OPS
DEFAULT_TOOL_MIX = reference.DEFAULT_TOOL_MIX


@dataclass(frozen=True)
class LoadSettings:
    """What every simulated MCP client does, identical on every Locust worker."""

    records_path: str
    """JSON-lines file the Locust master (or a lone local runner) appends records to."""
    mcp_path: str = "/mcp"
    protocol: str = PROTOCOL_2025_11_25
    """``2025-11-25`` (initialize, sessions) or ``2026-07-28`` (sessionless)."""
    think_time_s: tuple[float, float] = (1.0, 2.0)
    """Uniform pause between two operations of one user (min, max)."""
    tool_mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TOOL_MIX))
    """Relative weight of each operation: ``OPS``, the write tool's name, or any tool."""
    tool_arguments: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Arguments of the tools in ``tool_mix`` that are not ``OPS`` (default ``{}``)."""
    reconnect_policy: PolicyName = "backoff"
    """``immediate``: first attempt at once, then one every ``backoff_base_s`` in lockstep; ``backoff``: full jitter.

    Under both a shed attempt waits out its ``Retry-After`` (see ``policy``)."""
    backoff_base_s: float = 0.1
    backoff_cap_s: float = 5.0
    request_timeout_s: float = 10.0
    headers: dict[str, str] = field(default_factory=dict)
    """Extra HTTP headers sent on every request, kept across reconnects."""
    id_prefix: str = "load"
    """Prefix of every note id this run writes; unique per run."""
    seed: int = 0
    hold_stream: bool = False
    """2025-11-25: each user also holds its session's standalone GET SSE stream open, so a
    storm includes those connections. No effect in 2026-07-28, which has no such stream."""
    write_tool: str = reference.WRITE_TOOL
    """The tool a ``create_note`` operation calls (the scenario's ``ledger.tool``)."""
    write_arguments: dict[str, Any] = field(default_factory=lambda: dict(WriteTemplate.arguments))
    write_content: str = WriteTemplate.content
    parent_probability: float = 0.5
    """How often a write names one of the client's earlier writes as its parent."""
    success_when: dict[str, Any] = field(default_factory=lambda: AckRule().as_dict())
    """When a write tool's result is an acknowledgement: the scenario's
    ``ledger.success_when`` as data (keys ``equals``, ``not_false``, ``absent``,
    ``text_not_matching``; see ``wire.AckRule``). A result that fails it is a
    ``tool_error``, not acknowledged."""
    retry_unanswered: int = 1
    """A write that got no reply (reset, timeout) is sent again with the same id up to this
    many times, after reconnecting (the scenario's ``ledger.retry_unanswered``)."""

    def __post_init__(self) -> None:
        problems = []
        if self.protocol not in SUPPORTED_PROTOCOLS:
            supported = ", ".join(sorted(SUPPORTED_PROTOCOLS))
            problems.append(f"protocol {self.protocol!r} is not supported (use {supported})")
        low, high = self.think_time_s
        if not 0 <= low <= high:
            problems.append(f"think_time_s {self.think_time_s} needs 0 <= min <= max")
        if any(not op for op in self.tool_mix):
            problems.append("tool_mix has an empty tool name")
        if any(weight < 0 for weight in self.tool_mix.values()) or not any(
            weight > 0 for weight in self.tool_mix.values()
        ):
            problems.append("tool_mix needs non-negative weights, at least one positive")
        if self.reconnect_policy not in RECONNECT_POLICIES:
            problems.append(
                f"reconnect_policy {self.reconnect_policy!r} is not one of {RECONNECT_POLICIES}"
            )
        if not 0 < self.backoff_base_s <= self.backoff_cap_s:
            problems.append("backoff needs 0 < backoff_base_s <= backoff_cap_s")
        if self.request_timeout_s <= 0:
            problems.append("request_timeout_s must be positive")
        if not self.mcp_path.startswith("/"):
            problems.append(f"mcp_path {self.mcp_path!r} must start with '/'")
        try:
            self.ack_rule()
        except (ValueError, TypeError) as exc:
            problems.append(f"success_when: {exc}")
        if not isinstance(self.retry_unanswered, int) or self.retry_unanswered < 0:
            problems.append(f"retry_unanswered {self.retry_unanswered!r} must be an int >= 0")
        if problems:
            raise ValueError("invalid load settings: " + "; ".join(problems))

    def write_template(self) -> WriteTemplate:
        return WriteTemplate(
            self.write_tool, tuple(self.write_arguments.items()), self.write_content
        )

    def ack_rule(self) -> AckRule:
        """The success rule a write tool's result must pass to be acknowledged."""
        return AckRule.of(self.success_when)

    def policy(self) -> ReconnectPolicy:
        """The reconnect pacing these settings describe."""
        return ReconnectPolicy(
            self.reconnect_policy, self.backoff_base_s, self.backoff_cap_s, self.think_time_s
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LoadSettings:
        raw: dict[str, Any] = json.loads(text)
        unknown = sorted(set(raw) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"invalid load settings: unknown keys {unknown}")
        if "think_time_s" in raw:
            low, high = raw["think_time_s"]
            raw["think_time_s"] = (float(low), float(high))
        return cls(**raw)

    def write(self, path: Path) -> Path:
        path.write_text(self.to_json())
        return path


def load_from_env(environ: dict[str, str] | None = None) -> LoadSettings:
    """Settings from the JSON file named by ``MCP_HARNESS_LOAD``."""
    env = cast(dict[str, str], os.environ) if environ is None else environ
    path = env.get(SETTINGS_ENV)
    if not path:
        raise RuntimeError(
            f"{SETTINGS_ENV} is not set: it must name the load settings JSON file "
            "(the harness writes one into the run directory)"
        )
    return LoadSettings.from_json(Path(path).read_text())
