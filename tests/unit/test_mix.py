"""The tool mix checked against the server's own tools/list."""

from __future__ import annotations

from harness import reference
from harness.load.mix import mix_for_server

LISTED = ("put_item", "get_item", "stats")


def test_the_default_mix_keeps_only_what_the_server_lists() -> None:
    decision = mix_for_server(
        reference.DEFAULT_TOOL_MIX, explicit=False, listed=LISTED, write_tool="put_item"
    )
    assert decision.mix == {"tools/list": 4.0, "create_note": 2.0}
    assert decision.left_out == ["get_note", "search_notes", "notes_report"]
    assert not decision.unknown


def test_a_written_mix_naming_a_tool_the_server_lacks_is_refused_not_trimmed() -> None:
    mix = {"tools/list": 1.0, "put_item": 1.0, "stats": 1.0, "get_note": 1.0}
    decision = mix_for_server(mix, explicit=True, listed=LISTED, write_tool="put_item")
    assert decision.unknown == ["get_note"] and decision.mix == mix


def test_a_server_with_every_tool_keeps_the_mix_as_it_is() -> None:
    decision = mix_for_server(
        reference.DEFAULT_TOOL_MIX, explicit=False, listed=reference.OPS, write_tool="create_note"
    )
    assert decision.mix == reference.DEFAULT_TOOL_MIX and not decision.left_out


def test_the_run_sends_the_servers_mix_and_records_it(monkeypatch) -> None:
    """The glue in run.py on a canned tools/list reply (the listing itself is the MCP
    client's, tested against real servers)."""
    import asyncio
    from types import SimpleNamespace

    import pytest

    from harness import run
    from harness.config import Scenario
    from harness.mcp_client.wire import McpOutcome

    reply = McpOutcome(None, {"result": {}})

    async def listing(url, **kwargs):
        return reply, [{"name": "create_note"}, {"name": "stats"}]

    monkeypatch.setattr(run, "list_tools_once", listing)
    stack = SimpleNamespace(endpoints=SimpleNamespace(mcp_url="http://127.0.0.1:1/mcp"))
    default = Scenario.model_validate({"name": "s", "server": {"command": ["srv"]}})
    record = run._planned_record(default, "r1")
    chosen = asyncio.run(run._mix_for_the_server(default, stack, record))
    assert chosen.load.tool_mix == {"tools/list": 4.0, "create_note": 2.0}
    assert record.scenario.load.tool_mix == chosen.load.tool_mix
    assert "get_note, search_notes, notes_report are not tools of this server" in record.notes[0]

    written = Scenario.model_validate(
        {"name": "s", "server": {"command": ["srv"]}, "load": {"tool_mix": {"get_note": 1}}}
    )
    with pytest.raises(run.ScenarioDoesNotFitServer, match="names get_note, which the server"):
        asyncio.run(run._mix_for_the_server(written, stack, run._planned_record(written, "r2")))
    reference = Scenario(name="ref")
    assert asyncio.run(run._mix_for_the_server(reference, stack, record)) is reference


def test_the_listing_follows_every_page_and_gives_up_on_a_broken_one(monkeypatch) -> None:
    """The pagination loop of ``list_tools_once`` on canned pages (one request per page, in
    the session the listing opened)."""
    import asyncio
    import json

    from harness.mcp_client import async_client
    from harness.mcp_client.wire import ErrorKind, McpOutcome

    pages = {
        None: {"tools": [{"name": "a"}, {"name": ""}, "junk"], "nextCursor": "p2"},
        "p2": {"tools": [{"name": "b"}], "nextCursor": "p3"},
        "p3": {"tools": [{"name": "c"}]},
    }
    asked = []

    async def opened(client, url, session):
        return McpOutcome(None)

    async def send(client, url, request):
        cursor = json.loads(request.body)["params"].get("cursor")
        asked.append(cursor)
        if cursor == "broken":
            return McpOutcome(ErrorKind.TIMEOUT, detail="no reply"), None
        return McpOutcome(None, {"result": pages[cursor]}), None

    monkeypatch.setattr(async_client, "open_session", opened)
    monkeypatch.setattr(async_client, "send", send)
    outcome, tools = asyncio.run(async_client.list_tools_once("http://127.0.0.1:1/mcp"))
    assert outcome.ok and [t["name"] for t in tools] == ["a", "b", "c"]
    assert asked == [None, "p2", "p3"]

    pages["p2"]["nextCursor"] = "broken"
    outcome, tools = asyncio.run(async_client.list_tools_once("http://127.0.0.1:1/mcp"))
    assert tools is None and outcome.error_kind is ErrorKind.TIMEOUT

    pages["p2"]["nextCursor"] = "p2"  # a cursor that never ends
    outcome, tools = asyncio.run(async_client.list_tools_once("http://127.0.0.1:1/mcp"))
    assert tools is None and asked.count("p2") > async_client.MAX_TOOL_PAGES - 5
