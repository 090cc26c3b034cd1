"""The reference server's fault modes without a database: flags, mangling, phantoms, the
choice of rows compact_notes damages, which tools each mode lists, /healthz and /metrics."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import httpx2
import pytest

from harness.server.__main__ import parse_args
from harness.server.app import TOOL_NAMES, ServerConfig, build_app, build_mcp_server
from harness.server.faults import (
    FAULT_MODES,
    GARBAGE_SUFFIX,
    PHANTOM_ID_PREFIX,
    FaultSettings,
    PhantomSchedule,
    damage_count,
    damage_order,
    mangle_body,
    phantom_note,
    plan_damage,
)
from harness.server.notes import DbSettings, NotesStore
from harness.server.protection import ProtectionSettings
from harness.server.shield import Protection

UNUSED_DSN = "postgresql://nobody@127.0.0.1:1/none"
"""Never connected to: these tests only build the server and read what it serves from memory."""


def test_fault_mode_flags_default_to_the_good_release() -> None:
    args = parse_args(["--port", "8000"])
    assert args.fault_mode == "none"
    assert args.garbage_phantom_every == 5


@pytest.mark.parametrize("mode", FAULT_MODES)
def test_every_fault_mode_is_accepted(mode: str) -> None:
    assert parse_args(["--port", "8000", "--fault-mode", mode]).fault_mode == mode


def test_unknown_fault_mode_and_negative_phantom_period_are_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--port", "8000", "--fault-mode", "explode"])
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--port", "8000", "--garbage-phantom-every", "-1"])
    assert parse_args(["--port", "1", "--garbage-phantom-every", "0"]).garbage_phantom_every == 0


def test_fault_settings_refuse_what_the_cli_would() -> None:
    with pytest.raises(ValueError, match="unknown fault mode"):
        FaultSettings(mode="explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="phantom_every"):
        FaultSettings(phantom_every=-1)


@pytest.mark.parametrize("body", ["", "a", "abc", "level", "x" * 1000, "é\n✓"])
def test_mangled_body_always_differs_and_breaks_the_checksum(body: str) -> None:
    mangled = mangle_body(body)
    assert mangled != body
    assert mangled.endswith(GARBAGE_SUFFIX)

    def checksum(text: str) -> str:
        return hashlib.sha256(f"title\n{text}".encode()).hexdigest()

    assert checksum(mangled) != checksum(body)


def test_phantom_rows_have_a_garbage_id_and_a_non_blank_title() -> None:
    phantom = phantom_note("0123456789abcdef")
    assert phantom.id == f"{PHANTOM_ID_PREFIX}0123456789abcdef"
    assert phantom.title.strip()
    random_id = phantom_note().id
    assert random_id.startswith(PHANTOM_ID_PREFIX)
    assert len(random_id) == len(PHANTOM_ID_PREFIX) + 16
    assert random_id != phantom_note().id


def test_a_phantom_is_due_after_every_nth_created_note() -> None:
    schedule = PhantomSchedule(3)
    assert [schedule.note_created() for _ in range(7)] == [
        False,
        False,
        True,
        False,
        False,
        True,
        False,
    ]
    never = PhantomSchedule(0)
    assert not any(never.note_created() for _ in range(20))
    with pytest.raises(ValueError):
        PhantomSchedule(-1)


@pytest.mark.parametrize(
    ("candidates", "fraction", "count"),
    [
        (100, 0.02, 2),
        (100, 0.29, 29),  # float arithmetic gives 28.999...; the decimal written is meant
        (100, 0.57, 57),
        (149, 0.01, 1),  # 1.49 rounded down
        (10, 0.01, 1),  # 0.1 rounded down is 0, but a fraction > 0 damages at least one row
        (10, 0.0, 0),
        (0, 0.5, 0),
        (7, 1.0, 7),
    ],
)
def test_damage_count_rounds_down_with_at_least_one(
    candidates: int, fraction: float, count: int
) -> None:
    assert damage_count(candidates, fraction) == count


def test_damage_count_refuses_a_fraction_outside_0_to_1() -> None:
    with pytest.raises(ValueError):
        damage_count(10, 1.5)
    with pytest.raises(ValueError):
        damage_count(10, -0.1)


def test_damage_order_is_a_fixed_shuffle_per_seed() -> None:
    ids = [f"note-{i}" for i in range(50)]
    first = damage_order(ids, 7)
    assert first == damage_order(reversed(ids), 7)
    assert sorted(first) == sorted(ids)
    assert first != damage_order(ids, 8)
    expected = sorted(ids, key=lambda i: hashlib.md5(f"{i}7".encode()).hexdigest())
    assert first == expected


def test_damage_plan_takes_disjoint_consecutive_slices() -> None:
    ordered = [f"n{i}" for i in range(100)]
    plan = plan_damage(ordered, (0.05, 0.03, 0.02))
    assert plan.update == ordered[:5]
    assert plan.delete == ordered[5:8]
    assert plan.break_invariant == ordered[8:10]


def test_damage_plan_gives_later_sets_what_is_left() -> None:
    plan = plan_damage(["a", "b"], (0.01, 0.01, 0.01))
    assert (plan.update, plan.delete, plan.break_invariant) == (["a"], ["b"], [])
    plan = plan_damage(["a", "b", "c"], (0.9, 0.5, 0.0))
    assert (plan.update, plan.delete, plan.break_invariant) == (["a", "b"], ["c"], [])
    empty = plan_damage([], (0.5, 0.5, 0.5))
    assert (empty.update, empty.delete, empty.break_invariant) == ([], [], [])


def _tools(faults: FaultSettings) -> dict[str, Any]:
    store = NotesStore(DbSettings(dsn=UNUSED_DSN))
    protection = Protection(ProtectionSettings(), tools=TOOL_NAMES, lane_timeout_s=1.0)
    server = build_mcp_server(store, protection, faults)
    return {tool.name: tool for tool in asyncio.run(server.list_tools())}


@pytest.mark.parametrize("mode", ["none", "write-garbage"])
def test_compact_notes_exists_only_in_corrupt_state(mode: Any) -> None:
    assert tuple(_tools(FaultSettings(mode=mode))) == TOOL_NAMES


def test_corrupt_state_lists_compact_notes_as_destructive() -> None:
    compact = _tools(FaultSettings(mode="corrupt-state"))["compact_notes"]
    assert compact.annotations.destructive_hint is True
    properties = compact.input_schema["properties"]
    assert set(properties) == {"update_fraction", "delete_fraction", "invariant_fraction", "seed"}
    assert properties["update_fraction"]["default"] == 0.02
    assert properties["delete_fraction"]["maximum"] == 1
    assert set(compact.output_schema["properties"]) == {
        "updated",
        "deleted",
        "invariant_broken",
        "rows_before",
    }


def test_create_note_describes_its_optional_checksum_and_parent() -> None:
    create = _tools(FaultSettings())["create_note"]
    properties = create.input_schema["properties"]
    assert create.input_schema["required"] == ["id", "title", "body"]
    assert "sha256" in json.dumps(properties["checksum"])
    assert "earlier note" in json.dumps(properties["parent_id"])
    note = _tools(FaultSettings())["get_note"].output_schema["properties"]
    assert {"checksum", "parent_id"} <= set(note)


async def _get(app: Any, path: str) -> httpx2.Response:
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        return await client.get(path)


@pytest.mark.parametrize("mode", FAULT_MODES)
def test_healthz_and_metrics_name_the_fault_mode(mode: Any) -> None:
    app = build_app(ServerConfig(db=DbSettings(dsn=UNUSED_DSN), faults=FaultSettings(mode=mode)))
    health = asyncio.run(_get(app, "/healthz"))
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "db": "unknown", "fault_mode": mode}
    metrics = asyncio.run(_get(app, "/metrics")).text
    assert f'mcp_fault_mode{{mode="{mode}"}} 1\n' in metrics
