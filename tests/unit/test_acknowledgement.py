"""An acknowledgement is a durable success: the write tool's result must pass the scenario's
success rule, and a write that got no reply is sent again (at-least-once clients)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from harness.config import LedgerConfig, Scenario, SuccessRule
from harness.load.settings import LoadSettings
from harness.load.swarm import settings_for
from harness.mcp_client.acks import AckRule, ack_failure, ack_rule_for, judge_ack, result_json
from harness.mcp_client.wire import (
    ErrorKind,
    McpOutcome,
    McpRequest,
    McpSession,
    outcome_of,
    retry_unanswered_write,
)

WRITE_TOOL = "create_note"
FAILED_QUERY = {"success": False, "error": "Connection failed: server closed the connection"}


def write_call(session: McpSession | None = None) -> McpRequest:
    return (session or McpSession()).tools_call(WRITE_TOOL, {"id": "n1", "title": "t"})


def reply(request: McpRequest, result: dict[str, Any]) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": request.request_id, "result": result})


def text_result(value: Any) -> dict[str, Any]:
    text = value if isinstance(value, str) else json.dumps(value)
    return {"content": [{"type": "text", "text": text}]}


def judged(
    result: dict[str, Any], rule: AckRule | None = None, tool: str = WRITE_TOOL
) -> McpOutcome:
    """The verdict on ``result`` as the load user and the probe reach it: ``ack_rule_for``
    picks the rule (the write tool's only), ``outcome_of`` judges the reply with it."""
    session = McpSession()
    request = session.tools_call(tool, {"id": "n1"})
    rule = ack_rule_for(request, WRITE_TOOL, rule or AckRule())
    return judge_ack(outcome_of(request, 200, reply(request, result), "application/json"), rule)


def test_success_false_in_text_content_is_a_tool_error_not_an_ack() -> None:
    outcome = judged(text_result(FAILED_QUERY))
    assert outcome.error_kind is ErrorKind.TOOL_ERROR and not outcome.ok
    assert "success is false" in outcome.detail and "Connection failed" in outcome.detail
    assert not outcome.breaks_session


def test_success_false_in_structured_content_is_a_tool_error() -> None:
    result = {"content": [{"type": "text", "text": "done"}], "structuredContent": FAILED_QUERY}
    outcome = judged(result)
    assert outcome.error_kind is ErrorKind.TOOL_ERROR
    assert not outcome.breaks_session


def test_structured_content_is_read_before_the_text() -> None:
    result = {**text_result(FAILED_QUERY), "structuredContent": {"success": True, "id": "x"}}
    assert judged(result).ok
    assert result_json(result) == {"success": True, "id": "x"}


def test_success_true_with_an_id_is_acknowledged() -> None:
    assert judged(text_result({"success": True, "id": "x"})).ok
    assert judged({"content": [], "structuredContent": {"success": True, "id": "x"}}).ok


def test_a_null_error_is_acknowledged() -> None:
    assert judged(text_result({"error": None})).ok
    assert judged(text_result({"id": "x", "error": ""})).ok


def test_an_error_member_fails_even_without_success() -> None:
    outcome = judged(text_result({"error": "relation notes does not exist"}))
    assert outcome.error_kind is ErrorKind.TOOL_ERROR
    assert "relation notes does not exist" in outcome.detail
    assert judged(text_result({"ok": False})).error_kind is ErrorKind.TOOL_ERROR


def test_plain_text_results_pass_the_default_rule() -> None:
    assert result_json(text_result("Note n1 created")) is None
    assert judged(text_result("Note n1 created")).ok


def test_text_not_matching_fails_a_result_whose_text_matches() -> None:
    rule = AckRule.of(SuccessRule(text_not_matching=r"^error\b|failed"))
    outcome = judged(text_result("ERROR: could not connect to server"), rule)
    assert outcome.error_kind is ErrorKind.TOOL_ERROR and "text matches" in outcome.detail
    assert judged(text_result("Query FAILED"), rule).error_kind is ErrorKind.TOOL_ERROR
    assert judged(text_result("Note n1 created"), rule).ok


def test_a_custom_equals_rule() -> None:
    rule = AckRule.of(SuccessRule(equals={"status": "ok", "result.rows": 1}, absent=[]))
    good = {"status": "ok", "result": {"rows": 1}}
    assert judged(text_result(good), rule).ok
    assert judged({"structuredContent": good}, rule).ok
    wrong = judged(text_result({"status": "error", "result": {"rows": 1}}), rule)
    assert wrong.error_kind is ErrorKind.TOOL_ERROR and "status" in wrong.detail
    missing = judged(text_result({"status": "ok"}), rule)
    assert missing.error_kind is ErrorKind.TOOL_ERROR and "result.rows is missing" in missing.detail
    assert ack_failure({"structuredContent": {"status": "ok", "result": {"rows": True}}}, rule)


def test_a_rule_with_nothing_to_check_acknowledges_any_result() -> None:
    rule = AckRule(not_false=(), absent=())
    assert judged(text_result(FAILED_QUERY), rule).ok


def test_a_non_write_tool_keeps_the_old_judgement() -> None:
    session = McpSession()
    rule = AckRule()
    assert ack_rule_for(session.tools_call("get_note", {"id": "n1"}), WRITE_TOOL, rule) is None
    assert ack_rule_for(session.tools_list(), WRITE_TOOL, rule) is None
    assert ack_rule_for(write_call(session), WRITE_TOOL, rule) is rule
    assert judged(text_result(FAILED_QUERY), tool="get_note").ok
    assert judged({"isError": True, "content": []}, tool="get_note").error_kind is (
        ErrorKind.TOOL_ERROR
    )


def test_is_error_and_rpc_errors_are_judged_as_before() -> None:
    request = write_call()
    rpc = json.dumps({"jsonrpc": "2.0", "id": request.request_id, "error": {"code": -1}})
    assert judge_ack(outcome_of(request, 200, rpc), AckRule()).error_kind is ErrorKind.RPC_ERROR
    is_error = reply(request, {"isError": True, "content": [{"type": "text", "text": "boom"}]})
    outcome = judge_ack(outcome_of(request, 200, is_error), AckRule())
    assert outcome.error_kind is ErrorKind.TOOL_ERROR and outcome.detail == "boom"


def test_judge_ack_leaves_failures_and_unjudged_calls_alone() -> None:
    reset = McpOutcome(ErrorKind.CONNECT_RESET, detail="reset")
    assert judge_ack(reset, AckRule()) is reset
    ok = McpOutcome(None, {"jsonrpc": "2.0", "id": 1, "result": text_result(FAILED_QUERY)})
    assert judge_ack(ok, None) is ok
    assert judge_ack(ok, AckRule()).error_kind is ErrorKind.TOOL_ERROR


def test_the_rule_is_the_config_default_and_survives_the_settings_json() -> None:
    assert AckRule.of(SuccessRule()) == AckRule()
    custom = SuccessRule(equals={"status": "ok"}, not_false=["done"], text_not_matching="x")
    rule = AckRule.of(custom)
    assert AckRule.of(rule.as_dict()) == rule
    assert rule.as_dict() == custom.model_dump(mode="json")
    settings = LoadSettings(records_path="r", success_when=rule.as_dict(), retry_unanswered=3)
    again = LoadSettings.from_json(settings.to_json())
    assert again.ack_rule() == rule and again.retry_unanswered == 3
    assert LoadSettings(records_path="r").ack_rule() == AckRule()
    assert LoadSettings(records_path="r").retry_unanswered == 1


def test_settings_for_passes_the_scenarios_rule_and_retries(tmp_path) -> None:
    ledger = LedgerConfig(
        tool="save", success_when=SuccessRule(equals={"status": "ok"}), retry_unanswered=2
    )
    settings = settings_for(Scenario(name="s", ledger=ledger), tmp_path / "r.jsonl", "p")
    assert settings.ack_rule() == AckRule.of(ledger.success_when)
    assert settings.ack_rule().equals == (("status", "ok"),)
    assert settings.retry_unanswered == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"success_when": {"text_not_matching": "("}}, "success_when"),
        ({"success_when": {"when": "always"}}, "unknown success rule keys"),
        ({"retry_unanswered": -1}, "retry_unanswered"),
    ],
)
def test_bad_rules_and_retry_counts_are_refused(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LoadSettings(records_path="r", **change)


@pytest.mark.parametrize(
    ("kind", "retried"),
    [
        (ErrorKind.CONNECT_RESET, True),
        (ErrorKind.TIMEOUT, True),
        (ErrorKind.CONNECT_REFUSED, False),
        (ErrorKind.SHED, False),
        (ErrorKind.HTTP_5XX, False),
        (ErrorKind.HTTP_404, False),
        (ErrorKind.HTTP_4XX, False),
        (ErrorKind.RPC_ERROR, False),
        (ErrorKind.TOOL_ERROR, False),
        (ErrorKind.BAD_RESPONSE, False),
        (None, False),
    ],
)
def test_only_an_unanswered_write_is_sent_again(kind: ErrorKind | None, retried: bool) -> None:
    assert retry_unanswered_write(kind, 0, 1) is retried


def test_an_unanswered_write_is_sent_again_at_most_retry_unanswered_times() -> None:
    def sends(limit: int) -> int:
        """Sends of one write that never gets a reply, following the decision."""
        count, retries = 1, 0
        while retry_unanswered_write(ErrorKind.TIMEOUT, retries, limit):
            retries += 1
            count += 1
        return count

    assert [sends(limit) for limit in (0, 1, 2, 5)] == [1, 2, 3, 6]
