"""The pure parts of the measurement-truth checks: how an outage's samples become
db_failover_s / failover_s and their errors against the injected truth, the goal, the
figures, and LSN comparison."""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from typing import Any

import httpx2
import pytest

from bench.accuracy import (
    SERVICE_INTERVAL_S,
    SERVICE_TIMEOUT_S,
    STABILITY_S,
    Outage,
    lsn_value,
    measure_outage,
    outage_figures,
)
from harness.config import SuccessRule
from harness.mcp_client.wire import McpSession
from harness.measure.failover import (
    ProbeCadence,
    ServiceProbeSample,
    WriteProbeSample,
    first_service_write_s,
    stable_from_s,
)
from harness.measure.ledger import WriteLedger
from harness.measure.probes import RETRY_INTERVAL_S, ServiceProbe, WriteProbe
from harness.stack.net import free_port

PORT = 5432
OTHER_PORT = 5433


def writes_every(start: float, end: float, step: float, ok: bool, port: int = PORT):
    """Probe writes sent at start, start + step, ...; each acknowledged 5 ms after it was sent."""
    samples, seq, t = [], 0, start
    while t < end:
        seq += 1
        samples.append(
            WriteProbeSample(seq, t + 0.005, ok, port if ok else None, None if ok else "refused", t)
        )
        t += step
    return samples


def calls_every(start: float, end: float, step: float, ok: bool):
    samples, t = [], start
    while t < end:
        samples.append(ServiceProbeSample(t + 0.02, ok, None if ok else "tool_error", t))
        t += step
    return samples


OUTAGE = Outage(planned_s=1.0, t_fault_s=10.0, t_restore_s=11.0, call_s=0.002)


def probes(first_ok_write_s: float, first_ok_call_s: float):
    writes = (
        writes_every(9.0, 10.0, 0.05, True)
        + writes_every(10.0, first_ok_write_s, 0.05, False)
        + writes_every(first_ok_write_s, 20.0, 0.05, True)
    )
    calls = (
        calls_every(9.0, 10.0, 0.1, True)
        + calls_every(10.0, first_ok_call_s, 0.1, False)
        + calls_every(first_ok_call_s, 20.0, 0.1, True)
    )
    return writes, calls


def test_errors_are_measured_minus_the_outage_length() -> None:
    writes, calls = probes(first_ok_write_s=11.03, first_ok_call_s=11.06)
    m = measure_outage(OUTAGE, 20.0, writes, calls, PORT)
    assert OUTAGE.truth_s == pytest.approx(1.0)
    assert m.db_failover_s == pytest.approx(1.035)
    assert m.error_s("db_failover_s") == pytest.approx(0.035)
    assert m.failover_s == pytest.approx(1.08)
    assert m.error_s("failover_s") == pytest.approx(0.08)
    assert m.writes_in_outage == 0
    assert m.counted["db_failover_s"].sent_s == pytest.approx(11.03)
    # 35 ms late: sent 30 ms after the restore (the pace), acknowledged 5 ms later.
    assert m.split_s("db_failover_s") == pytest.approx((0.03, 0.005))
    assert m.split_s("failover_s") == pytest.approx((0.06, 0.02))


def test_a_write_in_flight_at_the_fault_is_not_the_first_after_it() -> None:
    """A reply stamped after t_fault for a write sent before it may be of a commit before the
    fault: counted, a 1 s outage read as 1 ms (before the fix). Now only writes sent after
    the fault count, for both probes."""
    write_straggler = WriteProbeSample(999, 10.001, True, PORT, None, 9.99)
    call_straggler = ServiceProbeSample(10.004, True, None, 9.98)
    writes, calls = probes(first_ok_write_s=11.03, first_ok_call_s=11.06)
    writes = sorted([*writes, write_straggler], key=lambda s: s.t_s)
    calls = sorted([*calls, call_straggler], key=lambda s: s.t_s)
    m = measure_outage(OUTAGE, 20.0, writes, calls, PORT)
    assert m.db_failover_s == pytest.approx(1.035)
    assert m.counted["db_failover_s"].sent_s == pytest.approx(11.03)
    assert (m.writes_in_outage, m.in_flight_at_fault) == (0, 1)  # shown, not counted
    assert m.first_service_write_s == pytest.approx(1.08)
    assert first_service_write_s(calls, 10.0) == pytest.approx(11.08)
    stable = stable_from_s(
        calls,
        10.0,
        STABILITY_S,
        20.0,
        cadence=ProbeCadence(SERVICE_INTERVAL_S, SERVICE_TIMEOUT_S),
    )
    assert stable == pytest.approx(11.08)
    # Samples without a send time (older records) are judged by their ack time, as before.
    unsent = [ServiceProbeSample(10.004, True), *calls]
    assert first_service_write_s(unsent, 10.0) == pytest.approx(10.004)


def test_only_the_node_named_counts_and_unseen_recovery_is_none() -> None:
    writes, calls = probes(first_ok_write_s=11.03, first_ok_call_s=11.06)
    assert measure_outage(OUTAGE, 20.0, writes, calls, OTHER_PORT).db_failover_s is None
    # The service probe must stay good for the stability window before the next outage.
    watched = 11.06 + STABILITY_S - 0.5
    assert measure_outage(OUTAGE, watched, writes, calls, PORT).failover_s is None


def test_figures_judge_the_worst_repetition_against_probe_interval_plus_50_ms() -> None:
    good_writes, good_calls = probes(first_ok_write_s=11.03, first_ok_call_s=11.06)
    late_writes, late_calls = probes(first_ok_write_s=11.2, first_ok_call_s=11.12)
    measures = [
        measure_outage(OUTAGE, 20.0, good_writes, good_calls, PORT),
        measure_outage(OUTAGE, 20.0, late_writes, late_calls, PORT),
    ]
    by_name = {f.name: f for f in outage_figures(measures)}
    db = by_name["db_failover_s error, 1000 ms outage"]
    assert db.value == pytest.approx(205.0)  # the worst of the two: 1.205 s for 1 s
    assert db.met is False and "100 ms" in (db.goal or "")
    assert db.detail["error_ms"] == [35.0, 205.0]
    service = by_name["failover_s error, 1000 ms outage"]
    assert service.value == pytest.approx(140.0)
    assert service.met is True and "150 ms" in (service.goal or "")


def test_an_unmeasured_repetition_misses_the_goal() -> None:
    writes, calls = probes(first_ok_write_s=11.03, first_ok_call_s=11.06)
    measures = [measure_outage(OUTAGE, 20.0, writes, calls, OTHER_PORT)]
    db = {f.name: f for f in outage_figures(measures)}["db_failover_s error, 1000 ms outage"]
    assert db.met is False and db.detail["measured_ms"] == [None]


def test_lsn_values_order_like_postgres() -> None:
    assert lsn_value("0/30D82D0") == 0x30D82D0
    assert lsn_value("1/0") > lsn_value("0/FFFFFFFF")
    assert lsn_value("0/30DB2A0") > lsn_value("0/30D82D0")


def test_write_probe_samples_without_a_send_time_still_work() -> None:
    sample = WriteProbeSample(1, 2.0, True, PORT)
    assert sample.sent_s is None


async def _run_for(probe: WriteProbe | ServiceProbe, seconds: float) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(probe.run(stop))
    await asyncio.sleep(seconds)
    stop.set()
    await task


def _gaps(sent: list[float | None]) -> list[float]:
    known = [s for s in sent if s is not None]
    return [b - a for a, b in zip(known, known[1:], strict=False)]


def test_probes_retry_every_25_ms_while_failing_and_stamp_each_send() -> None:
    """Against a port nothing listens on (connection refused at once): each failure is a
    sample with its send time, and the next try comes after the retry interval, not the
    interval. Only bounds contention cannot break are asserted: never faster than the
    retry interval, and faster than the interval at least once."""
    port = free_port()
    t0 = time.monotonic()
    writes = WriteProbe(f"postgresql://u:p@127.0.0.1:{port}/db", t0, 0.05, 1.0)
    service = ServiceProbe(f"http://127.0.0.1:{port}/mcp", t0, WriteLedger(), 0.1)

    async def both() -> None:
        await asyncio.gather(_run_for(writes, 0.6), _run_for(service, 0.6))

    asyncio.run(both())
    assert RETRY_INTERVAL_S == 0.025
    for samples, interval in ((writes.samples, 0.05), (service.samples, 0.1)):
        assert len(samples) >= 3 and not any(s.ok for s in samples)
        assert all(s.sent_s is not None and s.sent_s <= s.t_s for s in samples)
        gaps = _gaps([s.sent_s for s in samples])
        assert min(gaps) >= RETRY_INTERVAL_S - 0.002, gaps
        assert min(gaps) < interval, gaps


def fake_mcp_server(
    write_results: list[dict[str, Any]],
) -> tuple[httpx2.MockTransport, list[dict[str, Any]]]:
    """An MCP server in memory: a session for initialize, then each write tool call answered
    with the next of ``write_results`` (the last one repeats); returns it and the list the
    calls' arguments are appended to."""
    calls: list[dict[str, Any]] = []

    def handle(request: httpx2.Request) -> httpx2.Response:
        message = json.loads(request.content)
        if "id" not in message:
            return httpx2.Response(202)
        if message["method"] == "initialize":
            result: dict[str, Any] = {"protocolVersion": "2025-11-25", "capabilities": {}}
            body = {"jsonrpc": "2.0", "id": message["id"], "result": result}
            return httpx2.Response(200, json=body, headers={"mcp-session-id": "s1"})
        calls.append(message["params"]["arguments"])
        result = write_results[min(len(calls), len(write_results)) - 1]
        return httpx2.Response(200, json={"jsonrpc": "2.0", "id": message["id"], "result": result})

    return httpx2.MockTransport(handle), calls


def _probe_steps(probe: ServiceProbe, transport: httpx2.MockTransport, steps: int) -> list[Any]:
    async def run() -> list[Any]:
        session = McpSession()
        rng = random.Random(0)
        async with httpx2.AsyncClient(transport=transport) as client:
            return [await probe.step(client, session, rng) for _ in range(steps)]

    return asyncio.run(run())


def _text(value: dict[str, Any]) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": json.dumps(value)}]}


def test_probe_note_ids_are_new_every_run_and_numbered_within_it() -> None:
    """Two probes with the same seed (two runs of a series) write different ids; within a
    probe the ids are ``probe-<token>-1``, ``-2``, ..., and each ok sample names its write."""
    ids: list[str] = []
    for _ in range(2):
        probe = ServiceProbe("http://mcp.test/mcp", time.monotonic(), WriteLedger(), seed=7)
        transport, calls = fake_mcp_server([_text({"id": "x", "created": True})])
        assert _probe_steps(probe, transport, 2) == [call["id"] for call in calls]
        assert re.fullmatch(r"probe-[0-9a-f]{8}", probe.id_prefix)
        assert [call["id"] for call in calls] == [f"{probe.id_prefix}-{n}" for n in (1, 2)]
        assert [s.write_id for s in probe.samples] == [f"{probe.id_prefix}-{n}" for n in (1, 2)]
        assert set(probe.ledger.acked) == {f"{probe.id_prefix}-{n}" for n in (1, 2)}
        ids.extend(probe.ledger.acked)
    assert len(set(ids)) == 4
    named = ServiceProbe("u", 0.0, WriteLedger(), id_prefix="probe-run42")
    assert named.next_note_id() == "probe-run42-1"


def test_probe_does_not_acknowledge_a_write_that_fails_the_success_rule() -> None:
    probe = ServiceProbe("http://mcp.test/mcp", time.monotonic(), WriteLedger())
    failed = _text({"success": False, "error": "Connection failed"})
    transport, _ = fake_mcp_server([failed, {"structuredContent": {"success": True, "id": "x"}}])
    written = _probe_steps(probe, transport, 2)
    first, second = probe.samples
    assert written[0] is None and not first.ok and first.error == "tool_error"
    assert first.write_id is None
    assert second.ok and second.write_id == written[1] == f"{probe.id_prefix}-2"
    assert set(probe.ledger.acked) == {second.write_id}
    assert probe.ledger.attempted == {f"{probe.id_prefix}-1", f"{probe.id_prefix}-2"}


def test_probe_judges_by_the_rule_it_is_given() -> None:
    rule = SuccessRule(equals={"status": "ok"})
    probe = ServiceProbe("http://mcp.test/mcp", time.monotonic(), WriteLedger(), success_when=rule)
    transport, _ = fake_mcp_server([_text({"status": "queued"}), _text({"status": "ok"})])
    _probe_steps(probe, transport, 2)
    assert [s.ok for s in probe.samples] == [False, True]
    assert [s.error for s in probe.samples] == ["tool_error", None]
