"""``mcp-harness init``: a scenario for the user's own server, from its real tools.

It starts the stack with the server (or connects to a server the user runs), lists the
tools over MCP, and writes a scenario file: the ``server:`` block, a ``load.tool_mix`` of
tools it can call without guessing arguments, a ``ledger:`` for the write tool, and the
faults, windows and objectives of a shipped scenario. What it cannot infer (the SQL that
reads a write back) it asks for by flag, and refuses to guess. The file is validated as a
scenario before it is written, and an existing file is never overwritten without
``--force``.

The choices are pure functions of the tool listing (``ToolInfo``), tested without a server.
"""

from __future__ import annotations

import asyncio
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from harness import Say, reference
from harness.config import Scenario, ScenarioError, check_exposure, load_scenario, read_yaml
from harness.mcp_client.wire import McpOutcome
from harness.shipped import SCENARIOS_DIR, find_file

LEDGER_PLACEHOLDERS = ("id", "title", "body", "checksum", "parent_id")
"""The ledger's placeholders: an argument of the write tool with one of these names gets it."""

READ_TOOL_WEIGHT = 1.0
"""Weight of each of the server's own argument-free tools in the written mix."""

BASE_SECTIONS = ("seed", "postgres", "load", "faults", "recovery", "windows", "probes")
"""What the written scenario takes from the shipped one it starts from (besides objectives)."""


@dataclass(frozen=True)
class ToolInfo:
    """One tool of a ``tools/list`` result, as far as ``init`` needs it."""

    name: str
    properties: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    read_only: bool | None = None
    destructive: bool | None = None

    @classmethod
    def from_listing(cls, tool: dict[str, Any]) -> ToolInfo:
        schema = tool.get("inputSchema") or {}
        annotations = tool.get("annotations") or {}
        return cls(
            name=str(tool.get("name", "")),
            properties=tuple(schema.get("properties") or {}),
            required=tuple(schema.get("required") or ()),
            read_only=annotations.get("readOnlyHint"),
            destructive=annotations.get("destructiveHint"),
        )


@dataclass(frozen=True)
class InitRequest:
    """What the user said on the command line."""

    command: str | None
    url: str | None
    output: Path
    overwrite: bool = False
    name: str | None = None
    base: str = "primary_kill"
    path: str = "/mcp"
    ready: str | None = None
    database_url_env: str = "DATABASE_URL"
    write_tool: str | None = None
    write_arguments: str | None = None
    read_sql: str | None = None
    allow_remote: bool = False


def server_block(request: InitRequest) -> dict[str, Any]:
    """The scenario's ``server:`` section for the user's server."""
    if request.url:
        # Ports and passwords change every run: the server reads the run's database from
        # this file (docs/scenarios.md, server.database_url_file).
        handover = request.output.with_name(f"{request.output.stem}.db.env")
        return {"url": request.url, "database_url_file": str(handover)}
    assert request.command is not None
    try:
        argv = shlex.split(request.command)
    except ValueError as exc:
        raise ScenarioError(f"--command: {exc}") from None
    if not argv:
        raise ScenarioError("--command: empty; e.g. --command 'python server.py --port {port}'")
    return {
        "command": argv,
        "database_url_env": request.database_url_env,
        "path": request.path,
        "ready": request.ready,
    }


def ledger_for(
    tools: list[ToolInfo],
    write_tool: str | None,
    write_arguments: str | None,
    read_sql: str | None,
) -> tuple[str, dict[str, Any] | None]:
    """(the write tool, the ``ledger:`` section; None when the reference defaults fit).

    The arguments come from ``--write-arguments`` or from the tool's schema: each property
    named like a ledger placeholder gets it. A required property the ledger cannot fill, no
    argument carrying ``{id}``, or no way to read a write back is refused with the flag that
    settles it."""
    names = [t.name for t in tools]
    chosen = write_tool or (reference.WRITE_TOOL if reference.WRITE_TOOL in names else None)
    if chosen is None:
        raise ScenarioError(
            f"--write-tool: your server lists no {reference.WRITE_TOOL}; name the tool that "
            f"writes a row (its tools: {', '.join(names) or 'none'})"
        )
    tool = next((t for t in tools if t.name == chosen), None)
    if tool is None:
        raise ScenarioError(
            f"--write-tool {chosen}: your server lists no such tool (its tools: {', '.join(names)})"
        )
    arguments = _write_arguments(tool, write_arguments)
    if not any("{id}" in str(value) for value in arguments.values()):
        raise ScenarioError(
            f"--write-arguments: no argument of {chosen} carries {{id}}, which the ledger "
            'needs to find each write again; e.g. --write-arguments \'{"key": "{id}", ...}\''
        )
    if (
        read_sql is None
        and chosen == reference.WRITE_TOOL
        and arguments == reference.WRITE_ARGUMENTS
    ):
        return chosen, None
    if read_sql is None:
        raise ScenarioError(
            f"--read-sql: say how to read a write of {chosen} back, as SQL returning (id, "
            "content) for the ids in $1::text[], content being title + newline + body; e.g. "
            '--read-sql "SELECT key, payload FROM items WHERE key = ANY($1::text[])"'
        )
    ledger = {
        "tool": chosen,
        "arguments": arguments,
        "content": reference.WRITE_CONTENT,
        "read_sql": read_sql,
        "all_ids_sql": None,
    }
    return chosen, ledger


def _write_arguments(tool: ToolInfo, given: str | None) -> dict[str, Any]:
    if given is not None:
        try:
            arguments = json.loads(given)
        except json.JSONDecodeError as exc:
            raise ScenarioError(f"--write-arguments: not JSON: {exc}") from None
        if not isinstance(arguments, dict):
            raise ScenarioError("--write-arguments: expected a JSON object of arguments")
        return arguments
    unfilled = [p for p in tool.required if p not in LEDGER_PLACEHOLDERS]
    if unfilled:
        raise ScenarioError(
            f"--write-arguments: {tool.name} requires {', '.join(unfilled)}, which the ledger "
            f"cannot fill by name (it fills {', '.join(LEDGER_PLACEHOLDERS)}); give the "
            "arguments as JSON with those placeholders"
        )
    return {p: "{" + p + "}" for p in LEDGER_PLACEHOLDERS if p in tool.properties}


def tool_mix_for(tools: list[ToolInfo], write_tool: str) -> tuple[dict[str, float], list[str]]:
    """(the mix, a note for each tool left out and why).

    tools/list and the write tool at the reference weights; a tool named as one of the
    reference server's read tools when it takes what the load sends it; any other tool that
    needs no argument and is not marked as changing data, at ``READ_TOOL_WEIGHT``."""
    mix = {
        "tools/list": reference.DEFAULT_TOOL_MIX["tools/list"],
        write_tool: reference.DEFAULT_TOOL_MIX[reference.WRITE_TOOL],
    }
    left_out = []
    for tool in tools:
        if tool.name == write_tool:
            continue
        sent = reference.READ_TOOL_ARGUMENTS.get(tool.name)
        if tool.read_only is False or tool.destructive:
            left_out.append(f"{tool.name}: marked as changing data")
        elif sent is not None and set(tool.required) <= sent:
            mix[tool.name] = reference.DEFAULT_TOOL_MIX[tool.name]
        elif tool.required:
            left_out.append(
                f"{tool.name}: needs {', '.join(tool.required)} (add it to load.tool_mix and "
                "its arguments to load.tool_arguments)"
            )
        else:
            mix[tool.name] = READ_TOOL_WEIGHT
    return mix, left_out


def scenario_document(
    base: dict[str, Any],
    name: str,
    server: dict[str, Any],
    mix: dict[str, float],
    ledger: dict[str, Any] | None,
) -> dict[str, Any]:
    """The scenario as data: the base scenario's sections with the user's server, mix and
    ledger in place of the reference server's."""
    document: dict[str, Any] = {
        "name": name,
        "description": f"{base.get('name', 'base')} for your server, written by mcp-harness init",
        "server": server,
    }
    for key in BASE_SECTIONS:
        if key in base:
            document[key] = base[key]
    document["load"] = {**dict(base.get("load") or {}), "tool_mix": mix}
    if ledger is not None:
        document["ledger"] = ledger
    document["objectives"] = base.get("objectives") or []
    return document


def render(document: dict[str, Any], tools: list[ToolInfo], left_out: list[str]) -> str:
    """The scenario file: a header saying where it came from, then the YAML."""
    header = [
        "# Written by `mcp-harness init` from your server's tools/list:",
        *(f"#   {t.name}" for t in tools),
        *(
            ["# Left out of load.tool_mix:"] + [f"#   {note}" for note in left_out]
            if left_out
            else []
        ),
        "# Run it: mcp-harness run <this file>. Every key: docs/scenarios.md.",
        *(
            [
                "# Your server must use the run's database: start it from server.database_url_file",
                "# (the harness writes it once Postgres is up, then waits for your server).",
            ]
            if "url" in document.get("server", {})
            else []
        ),
    ]
    body = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    return "\n".join(header) + "\n" + body


async def list_tools(scenario: Scenario, pg_bin: str | None) -> list[ToolInfo]:
    """The server's tools: from its URL, or from the server started on a stack of its own."""
    from harness.mcp_client.async_client import list_tools_once

    if scenario.server.url:
        return _tools_of(await list_tools_once(scenario.server.url), scenario.server.url)
    from harness.stack import open_stack

    stack = open_stack(scenario, pg_bin=pg_bin)
    async with stack:
        url = stack.endpoints.mcp_url
        listing = await list_tools_once(url)
    try:
        tools = _tools_of(listing, url)
    except ScenarioError as exc:
        # the stack is down; its logs stay for the user to read why the server did not list
        logs = [p for p in stack.log_paths() if Path(p).name.startswith("mcp-server")]
        where = f" The server's log: {', '.join(logs)}" if logs else ""
        raise ScenarioError(f"{exc}{where}") from None
    stack.remove_run_dir()  # nothing of the stack is left in the temporary directory
    return tools


def _tools_of(listing: tuple[McpOutcome, list[dict[str, Any]] | None], url: str) -> list[ToolInfo]:
    outcome, tools = listing
    if tools is None:
        why = (
            f"{outcome.error_kind.value}: {outcome.detail}"
            if outcome.error_kind
            else "no tools list"
        )
        raise ScenarioError(
            f"tools/list at {url} failed ({why}); is it the MCP endpoint (--path), and does "
            "the server answer streamable HTTP?"
        )
    return [ToolInfo.from_listing(t) for t in tools]


def write_scenario_for_server(request: InitRequest, *, pg_bin: str | None, say: Say) -> int:
    """Exit 0 once the scenario is written; ScenarioError (exit 2) for what the user must
    settle; a stack that did not come up is exit 3 with its reason."""
    from harness.objectives import EXIT_INCONCLUSIVE
    from harness.stack import StackError

    output = request.output
    if output.exists() and not request.overwrite:
        raise ScenarioError(f"{output}: exists; choose another -o, or --force to replace it")
    base_path = find_file(request.base, SCENARIOS_DIR)
    base = read_yaml(base_path)
    server = server_block(request)
    try:
        probe = Scenario.model_validate({"name": "init", "server": server})
    except ValidationError as exc:
        raise ScenarioError(f"init: {exc.errors()[0]['msg']}") from None
    # the loopback guard before anything is started or connected to, as for every command
    check_exposure(probe, allow_remote=request.allow_remote, source="--url")
    say(
        "starting the stack with your server and listing its tools"
        if request.command
        else f"listing the tools at {request.url}"
    )
    try:
        tools = asyncio.run(list_tools(probe, pg_bin))
    except StackError as exc:
        say(f"your server did not come up on the stack: {exc}")
        return EXIT_INCONCLUSIVE
    write_tool, ledger = ledger_for(
        tools, request.write_tool, request.write_arguments, request.read_sql
    )
    mix, left_out = tool_mix_for(tools, write_tool)
    name = request.name or output.stem
    document = scenario_document(base, name, server, mix, ledger)
    text = render(document, tools, left_out)
    staged = output.with_name(f".{output.name}.init")
    staged.write_text(text)
    try:
        load_scenario(staged, allow_remote=request.allow_remote)
    except ScenarioError:
        staged.unlink()
        raise
    staged.replace(output)
    say(f"{len(tools)} tools: {', '.join(t.name for t in tools)}")
    say(f"load.tool_mix: {', '.join(f'{k} {v:g}' for k, v in mix.items())}")
    for note in left_out:
        say(f"left out: {note}")
    say(f"wrote {output}; next: mcp-harness run {output}")
    return 0
