"""``mcp-harness init``'s choices, from tool listings as a server returns them."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import reference
from harness.config import Scenario, ScenarioError, load_scenario, read_yaml
from harness.init_scenario import (
    InitRequest,
    ToolInfo,
    ledger_for,
    render,
    scenario_document,
    server_block,
    tool_mix_for,
)
from harness.shipped import SCENARIOS_DIR


def tool(name: str, properties: dict | None = None, required=(), **annotations) -> ToolInfo:
    listing = {
        "name": name,
        "inputSchema": {
            "type": "object",
            "properties": properties or {},
            "required": list(required),
        },
        "annotations": annotations,
    }
    return ToolInfo.from_listing(listing)


NOTES = [
    tool(
        "create_note",
        dict.fromkeys(("id", "title", "body", "checksum", "parent_id"), {"type": "string"}),
        required=("id", "title", "body"),
    ),
    tool("get_note", {"id": {}}, required=("id",)),
    tool("search_notes", {"query": {}, "limit": {}}, required=("query",)),
    tool("notes_report"),
]
ITEMS = [
    tool(
        "put_item", {"key": {}, "payload": {}, "tenant": {}}, required=("key", "payload", "tenant")
    ),
    tool("get_item", {"key": {}}, required=("key",)),
    tool("stats", readOnlyHint=True),
    tool("purge", destructiveHint=True),
    tool("rebuild_index", readOnlyHint=False),
]


def test_a_server_with_the_reference_tools_needs_no_ledger_and_gets_the_reference_mix() -> None:
    write_tool, ledger = ledger_for(NOTES, None, None, None)
    assert (write_tool, ledger) == ("create_note", None)
    mix, left_out = tool_mix_for(NOTES, write_tool)
    assert mix == reference.DEFAULT_TOOL_MIX and not left_out


def test_a_tool_of_a_reference_name_that_wants_more_than_the_load_sends_is_left_out() -> None:
    tools = [NOTES[0], tool("get_note", {"id": {}, "tenant": {}}, required=("id", "tenant"))]
    mix, left_out = tool_mix_for(tools, "create_note")
    assert "get_note" not in mix and left_out == [
        "get_note: needs id, tenant (add it to load.tool_mix and its arguments to load.tool_arguments)"
    ]


def test_a_users_write_tool_needs_its_arguments_and_a_way_to_read_writes_back() -> None:
    with pytest.raises(ScenarioError, match="--write-tool: your server lists no create_note"):
        ledger_for(ITEMS, None, None, None)
    with pytest.raises(ScenarioError, match="--write-tool nope: your server lists no such tool"):
        ledger_for(ITEMS, "nope", None, None)
    with pytest.raises(ScenarioError, match="put_item requires key, payload, tenant"):
        ledger_for(ITEMS, "put_item", None, None)
    with pytest.raises(ScenarioError, match="no argument of put_item carries"):
        ledger_for(ITEMS, "put_item", '{"key": "k", "payload": "{title}"}', None)
    with pytest.raises(ScenarioError, match="--write-arguments: not JSON"):
        ledger_for(ITEMS, "put_item", "{key: 1", None)
    arguments = '{"key": "{id}", "payload": "{title}\\n{body}", "tenant": "t1"}'
    with pytest.raises(ScenarioError, match="--read-sql"):
        ledger_for(ITEMS, "put_item", arguments, None)
    read_sql = "SELECT key, payload FROM items WHERE key = ANY($1::text[])"
    write_tool, ledger = ledger_for(ITEMS, "put_item", arguments, read_sql)
    assert write_tool == "put_item" and ledger == {
        "tool": "put_item",
        "arguments": {"key": "{id}", "payload": "{title}\n{body}", "tenant": "t1"},
        "content": reference.WRITE_CONTENT,
        "read_sql": read_sql,
        "all_ids_sql": None,
    }


def test_the_mix_calls_only_tools_it_can_call_without_guessing_and_says_why_not_the_rest() -> None:
    mix, left_out = tool_mix_for(ITEMS, "put_item")
    assert mix == {"tools/list": 4.0, "put_item": 2.0, "stats": 1.0}
    assert [note.split(":")[0] for note in left_out] == ["get_item", "purge", "rebuild_index"]


def test_the_written_file_is_a_valid_scenario_with_the_base_faults_and_objectives(
    tmp_path: Path,
) -> None:
    request = InitRequest(
        command="python server.py --port {port} --name 'my server'",
        url=None,
        output=tmp_path / "mine.yaml",
    )
    server = server_block(request)
    assert server["command"] == ["python", "server.py", "--port", "{port}", "--name", "my server"]
    base = read_yaml(SCENARIOS_DIR / "primary_kill.yaml")
    arguments = '{"key": "{id}", "payload": "{title}\\n{body}", "tenant": "t1"}'
    write_tool, ledger = ledger_for(ITEMS, "put_item", arguments, "SELECT 1, 'x'")
    mix, left_out = tool_mix_for(ITEMS, write_tool)
    document = scenario_document(base, "mine", server, mix, ledger)
    path = tmp_path / "mine.yaml"
    path.write_text(render(document, ITEMS, left_out))
    assert path.read_text().startswith("# Written by `mcp-harness init`")
    scenario = load_scenario(path)
    shipped = load_scenario(SCENARIOS_DIR / "primary_kill.yaml")
    assert scenario.server.command == server["command"] and scenario.server.ready is None
    assert scenario.load.tool_mix == mix and scenario.ledger.tool == "put_item"
    assert scenario.faults == shipped.faults and scenario.objectives == shipped.objectives
    assert scenario.integrity.checks is None  # a user's server: no reference invariants


def test_a_url_server_gets_its_url_and_a_database_file_and_a_bad_command_is_named() -> None:
    request = InitRequest(command=None, url="http://127.0.0.1:8000/mcp", output=Path("d/mine.yaml"))
    assert server_block(request) == {
        "url": "http://127.0.0.1:8000/mcp",
        "database_url_file": "d/mine.db.env",
    }
    with pytest.raises(ScenarioError, match="--command"):
        server_block(InitRequest(command="python 'unclosed", url=None, output=Path("x")))


def test_init_refuses_a_server_off_this_machine_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from harness.cli import main

    output = tmp_path / "mine.yaml"
    assert main(["init", "--url", "http://10.1.2.3:8000/mcp", "-o", str(output)]) == 2
    err = capsys.readouterr().err
    assert "not on this machine" in err and "--allow-remote" in err
    assert not output.exists() and not list(tmp_path.iterdir())


class StackThatListed:
    """Stands in for a stack that came up and went down: what init asks of it."""

    def __init__(self) -> None:
        self.removed = False
        self.endpoints = type("Endpoints", (), {"mcp_url": "http://127.0.0.1:9/mcp"})()

    async def __aenter__(self) -> StackThatListed:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def log_paths(self) -> list[str]:
        return [
            "/tmp/mcp-harness-x/logs/postgres-primary.log",
            "/tmp/mcp-harness-x/logs/mcp-server.log",
        ]

    def remove_run_dir(self) -> None:
        self.removed = True


@pytest.mark.parametrize("listed", [True, False])
def test_init_removes_its_stack_directory_unless_the_server_log_explains_a_failure(
    monkeypatch: pytest.MonkeyPatch, listed: bool
) -> None:
    import asyncio

    from harness import stack as stack_module
    from harness.init_scenario import list_tools
    from harness.mcp_client import async_client
    from harness.mcp_client.wire import ErrorKind, McpOutcome

    stack = StackThatListed()
    listing = [{"name": "create_note", "inputSchema": {"type": "object"}}] if listed else None
    outcome = McpOutcome(None if listed else ErrorKind.HTTP_404, detail="not here")

    async def list_once(url: str) -> tuple[McpOutcome, list[dict] | None]:
        return outcome, listing

    monkeypatch.setattr(stack_module, "open_stack", lambda scenario, pg_bin=None: stack)
    monkeypatch.setattr(async_client, "list_tools_once", list_once)
    scenario = Scenario.model_validate({"name": "init", "server": {"command": ["true", "{port}"]}})
    if listed:
        assert [t.name for t in asyncio.run(list_tools(scenario, None))] == ["create_note"]
        assert stack.removed
    else:
        with pytest.raises(
            ScenarioError, match=r"http_404.*server's log: /tmp/mcp-harness-x/logs/mcp-server\.log$"
        ):
            asyncio.run(list_tools(scenario, None))
        assert not stack.removed
