"""summary.md, and the words every rendering of a run shares.

The Markdown is short enough for ``$GITHUB_STEP_SUMMARY``: verdict, faults, the
objectives table, key figures, notes and doubts. The helpers above it (units, numbers,
the sentence for a missed objective, "what happened", the verdict's reason) are used by
junit.xml and report.html too, so the three files never tell a run differently.
Everything is rendered from result.json alone; any key may be absent (older schemas,
interrupted runs) and renders as a dash or is left out.
"""

from __future__ import annotations

import math
from typing import Any

from harness import catalog
from harness.report.text import code, markdown, plain_data

DASH = "—"
VERDICT_LABEL = {"pass": "PASS", "fail": "FAIL", "inconclusive": "INCONCLUSIVE"}
OBJECTIVE_LABEL = {"met": "met", "missed": "missed", "not_measured": "not measured"}


def unit_of(metric: str) -> str:
    """How a figure of ``metric`` is written in a report: ``s``, ``ms``, ``%`` (a fraction,
    shown as a percent) or nothing (counts), from the metric catalog."""
    found = catalog.metric(metric)
    return "" if found is None else REPORT_UNIT.get(found.unit, "")


REPORT_UNIT = {"s": "s", "ms": "ms", "fraction": "%"}


def number(value: Any) -> str:
    """Three significant digits, never in exponent form; integers as they are."""
    if value is None:
        return DASH
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or (math.isfinite(value) and value.is_integer()):
        return f"{int(value):,}"
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) < 0.001:
        return f"{value:.6f}".rstrip("0")
    return f"{value:.3g}"


def scaled(value: Any, unit: str) -> Any:
    """Rates are stored as fractions 0..1 and shown as percentages."""
    if unit == "%" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return value * 100
    return value


def with_unit(value: Any, unit: str) -> str:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return number(value)
    text = number(scaled(value, unit))
    if unit == "%":
        return f"{text}%"
    return f"{text} {unit}" if unit else text


def row_count(count: Any) -> str:
    return f"{number(count)} row" + ("" if count == 1 else "s")


def unit_name(unit: str) -> str:
    return {"s": "seconds", "ms": "ms", "%": "%", "": "count"}[unit]


def target_text(objective: dict[str, Any]) -> str:
    sign = "≤" if objective.get("bound", "max") == "max" else "≥"
    return f"{sign} {with_unit(objective.get('target'), unit_of(objective.get('metric', '')))}"


def measured_text(objective: dict[str, Any]) -> str:
    unit = unit_of(objective.get("metric", ""))
    if objective.get("measured") is None and objective.get("measured_at_least") is not None:
        at_least = with_unit(objective["measured_at_least"], unit)
        if objective.get("verdict") == "missed" and objective.get("reason"):
            return f"≥ {at_least} (lower bound)"
        return f"> {at_least} (not reached)"
    return with_unit(objective.get("measured"), unit)


def objective_message(objective: dict[str, Any]) -> str:
    """Why an objective is not met, with the measured value against the target:
    ``measured 12.3 > target 10 (seconds)``."""
    metric = objective.get("metric", "?")
    unit = unit_of(metric)
    target = number(scaled(objective.get("target"), unit))
    verdict = objective.get("verdict")
    measured = objective.get("measured")
    at_least = objective.get("measured_at_least")
    if verdict == "missed" and measured is None and at_least is not None:
        if objective.get("reason"):
            return (
                f"at least {number(scaled(at_least, unit))} > target {target} "
                f"({unit_name(unit)}), a lower bound that stands although {objective['reason']}"
            )
        return (
            f"not reached: still not back {number(scaled(at_least, unit))} after the fault, "
            f"> target {target} ({unit_name(unit)})"
        )
    if verdict == "not_measured":
        if objective.get("reason"):
            return f"not measured: {objective['reason']}; target {target} ({unit_name(unit)})"
        seen = f" (at least {number(scaled(at_least, unit))} observed)" if at_least else ""
        return f"not measured: {metric} has no value in this run{seen}; target {target} ({unit_name(unit)})"
    op = {"max": ">", "min": "<"} if verdict == "missed" else {"max": "≤", "min": "≥"}
    return (
        f"measured {number(scaled(measured, unit))} {op[objective.get('bound', 'max')]} "
        f"target {target} ({unit_name(unit)})"
    )


def doubts_of(result: dict[str, Any]) -> list[str]:
    return list(result.get("doubts") or [])


def notes_of(result: dict[str, Any]) -> list[str]:
    """The notes without the doubts, which result.json also lists among its notes."""
    doubts = set(doubts_of(result))
    return [n for n in result.get("notes") or [] if n not in doubts]


def run_unfinished(result: dict[str, Any]) -> bool:
    return result.get("complete") is False or bool(result.get("interrupted"))


def verdict_reasons(result: dict[str, Any]) -> list[str]:
    """Why the run got its verdict, most decisive first (the order ``run_verdict`` applies)."""
    objectives = result.get("objectives") or []
    verdict = result.get("verdict", "inconclusive")
    missed = [o for o in objectives if o.get("verdict") == "missed"]
    unmeasured = [o for o in objectives if o.get("verdict") == "not_measured"]
    doubts = [f"a figure could be wrong: {d}" for d in doubts_of(result)]
    if verdict == "fail" or missed:
        return [f"missed {o.get('metric')}: {objective_message(o)}" for o in missed] + doubts
    if verdict == "pass":
        return [f"all {len(objectives)} objectives met"] + doubts
    reasons = list(doubts)
    if run_unfinished(result):
        reasons.append(
            "the run did not finish" + (" (interrupted)" if result.get("interrupted") else "")
        )
    reasons += [
        f"fault {f.get('kind')} on {f.get('target')} was not confirmed"
        for f in result.get("faults") or []
        if not f.get("confirmed")
    ]
    if unmeasured:
        reasons.append("not measured: " + ", ".join(str(o.get("metric")) for o in unmeasured))
    if not objectives:
        reasons.append("no objective was judged: a run that gates nothing never passes")
    if not reasons:
        reasons = notes_of(result)[:1] or ["see the notes"]
    return reasons


def verdict_sentence(result: dict[str, Any]) -> str:
    label = VERDICT_LABEL.get(result.get("verdict", ""), str(result.get("verdict")).upper())
    return f"Verdict {label}: " + "; ".join(verdict_reasons(result)) + "."


def _seconds(value: Any) -> str:
    return with_unit(value, "s")


def instant(t_s: Any) -> str:
    """A moment on the run's time axis: ``t=25.0 s`` (tenths, whatever its size)."""
    if isinstance(t_s, (int, float)) and not isinstance(t_s, bool):
        return f"t={t_s:.1f} s"
    return f"t={DASH}"


def _fault_sentence(fault: dict[str, Any]) -> str:
    what = f"{fault.get('kind')} on {fault.get('target')}"
    if not fault.get("confirmed"):
        return f"{what}, scheduled at {instant(fault.get('at_s'))}, was never confirmed"
    text = f"{what} took effect at {instant(fault.get('t_fault_s'))}"
    if fault.get("t_end_s") is not None:
        text += f" and was lifted at {instant(fault['t_end_s'])}"
    return text


def _restore_sentence(restore: dict[str, Any]) -> str:
    target = restore.get("target") or {}
    aim = f"to {target.get('kind')}" + (f" {target['value']}" if target.get("value") else "")
    if restore.get("started_s") is None:
        return f"No restore ran: {restore.get('error') or 'it was not started'}."
    text = f"A restore ({restore.get('trigger')}) {aim} started at {instant(restore['started_s'])}"
    if restore.get("total_s") is not None:
        text += f" and had the service writing again {_seconds(restore['total_s'])} later"
    if restore.get("error"):
        text += f"; error: {restore['error']}"
    return text + "."


def what_happened(result: dict[str, Any]) -> str:
    """One paragraph from the data: load, faults, detection, restore, recovery, losses, verdict."""
    metrics = result.get("metrics") or {}
    scenario = result.get("scenario") or {}
    users = (metrics.get("generator") or {}).get("users_peak") or (scenario.get("load") or {}).get(
        "users"
    )
    requests = metrics.get("requests") or {}
    load = f"{scenario.get('name', 'The scenario')} ran {_seconds(result.get('duration_s'))}"
    load += f" on the {result.get('backend', '?')} backend"
    if users:
        load += f" with up to {number(users)} simulated MCP clients"
    if requests.get("total") is not None:
        load += (
            f" ({number(requests['total'])} requests, "
            f"{with_unit(requests.get('error_rate'), '%')} errors)"
        )
    sentences = [load + "."]
    faults = result.get("faults") or []
    if faults:
        sentences.append(
            ("Fault: " if len(faults) == 1 else "Faults: ")
            + "; ".join(_fault_sentence(f) for f in faults)
            + "."
        )
    else:
        sentences.append("No fault was scheduled.")
    if metrics.get("time_to_detect_s") is not None:
        sentences.append(
            f"Integrity checks flagged the damage {_seconds(metrics['time_to_detect_s'])} after the fault."
        )
    if metrics.get("db_failover_s") is not None:
        sentences.append(
            f"The promoted replica committed its first write {_seconds(metrics['db_failover_s'])} after the fault."
        )
    if metrics.get("restore"):
        sentences.append(_restore_sentence(metrics["restore"]))
    not_reached = metrics.get("not_reached_within_s") or {}
    disruption = next(
        (p for p in result.get("phases") or [] if p.get("name") == "disruption"), None
    )
    if metrics.get("failover_s") is not None:
        when = f" at {instant(disruption['end_s'])}," if disruption else ""
        sentences.append(
            f"The first lasting service write came{when} {_seconds(metrics['failover_s'])} after the fault."
        )
    elif not_reached.get("failover_s") is not None:
        sentences.append(
            f"No lasting service write came within {_seconds(not_reached['failover_s'])} after the fault."
        )
    if any(f.get("confirmed") for f in faults):
        sentences.append(_reconnect_sentence(metrics.get("reconnect")))
    sentences.append(_writes_sentence(metrics.get("writes")))
    sentences.append(verdict_sentence(result))
    return " ".join(s for s in sentences if s)


def _reconnect_sentence(reconnect: dict[str, Any] | None) -> str:
    if not reconnect:
        return ""
    broken = reconnect.get("clients_broken")
    if not broken:
        return "No client's session broke." if broken == 0 else ""
    times = reconnect.get("time_to_reconnect_s") or {}
    text = f"{number(broken)} clients lost their session and {number(reconnect.get('clients_reconnected'))} came back"
    if times.get("p99") is not None:
        text += f" (p99 {_seconds(times['p99'])}, slowest {_seconds(times.get('max'))})"
    if reconnect.get("clients_not_reconnected"):
        text += f"; {number(reconnect['clients_not_reconnected'])} did not"
    if reconnect.get("episodes_unobserved"):
        text += (
            f"; {number(reconnect['episodes_unobserved'])} breaks were too late in the run to judge"
        )
    return text + "."


def _writes_sentence(writes: dict[str, Any] | None) -> str:
    if not writes or writes.get("acknowledged") is None:
        return ""
    text = (
        f"Of {number(writes['acknowledged'])} acknowledged writes, "
        f"{number(writes.get('lost'))} were lost and {number(writes.get('altered'))} altered"
    )
    if writes.get("lost_after_incident"):
        text += (
            f" ({number(writes['lost_after_incident'])} lost ones were written after the incident)"
        )
    return text + f": RPO {row_count(writes.get('rpo_rows'))}, {_seconds(writes.get('rpo_s'))}."


def _metric_or_not_reached(metrics: dict[str, Any], name: str) -> str:
    value = metrics.get(name)
    at_least = (metrics.get("not_reached_within_s") or {}).get(name)
    if value is None and at_least is not None:
        return f"> {_seconds(at_least)} (not reached)"
    return _seconds(value)


def key_figures(result: dict[str, Any]) -> list[tuple[str, str]]:
    """The figures a reader looks for first, as (label, value) pairs; absent ones left out."""
    metrics = result.get("metrics") or {}
    rows: list[tuple[str, str]] = []
    judged = {o.get("metric") for o in result.get("objectives") or []}
    not_reached = metrics.get("not_reached_within_s") or {}
    for name in ("failover_s", "db_failover_s", "rto_s", "time_to_detect_s"):
        if metrics.get(name) is not None or name in not_reached or name in judged:
            rows.append((name, _metric_or_not_reached(metrics, name)))
    writes = metrics.get("writes") or {}
    if writes:
        rows.append(
            (
                "RPO (rpo_rows / rpo_s)",
                f"{row_count(writes.get('rpo_rows'))} / {_seconds(writes.get('rpo_s'))}",
            )
        )
        rows.append(
            (
                "writes acknowledged / lost / altered",
                f"{number(writes.get('acknowledged'))} / {number(writes.get('lost'))} / {number(writes.get('altered'))}",
            )
        )
    reconnect = metrics.get("reconnect") or {}
    if reconnect:
        if not reconnect.get("clients_broken"):
            rows.append(("reconnect", "no client's session broke"))
        else:
            rows.append(
                (
                    "reconnect (back / broken)",
                    f"{number(reconnect.get('clients_reconnected'))} / {number(reconnect.get('clients_broken'))}"
                    f" ({with_unit(reconnect.get('success_rate'), '%')})",
                )
            )
    for phase, figures in (metrics.get("tools_list_latency_ms") or {}).items():
        if isinstance(figures, dict):
            value = f"{with_unit(figures.get('p99'), 'ms')} (n={number(figures.get('count'))})"
            if not figures.get("count"):
                value = "no call"
            rows.append((f"tools/list p99, {phase}", value))
    restore = metrics.get("restore") or {}
    if restore:
        rows.append(("restore total_s", _seconds(restore.get("total_s"))))
    requests = metrics.get("requests") or {}
    if requests:
        rows.append(
            (
                "requests / error rate",
                f"{number(requests.get('total'))} / {with_unit(requests.get('error_rate'), '%')}",
            )
        )
    return rows


REQUEST_TABLE_HEAD = ("request", "count", "failures", "p50", "p95", "p99", "max")


def request_type_rows(result: dict[str, Any]) -> list[tuple[str, ...]]:
    """``requests.by_type`` as table rows (Locust's table): each request type's count,
    failures (and their share) and latency percentiles, in ms."""
    by_type = ((result.get("metrics") or {}).get("requests") or {}).get("by_type") or {}
    rows = []
    for name, figures in by_type.items():
        if not isinstance(figures, dict):
            continue
        failures, rate = figures.get("failures"), figures.get("failure_rate")
        share = f" ({number(rate * 100)} %)" if isinstance(rate, (int, float)) and rate else ""
        rows.append(
            (
                str(name),
                number(figures.get("count")),
                f"{number(failures)}{share}",
                *(with_unit(figures.get(p), "ms") for p in ("p50", "p95", "p99", "max")),
            )
        )
    return rows


def _cell(text: Any) -> str:
    """A Markdown table cell: the text as it is (no markup, no HTML), pipes escaped, one line."""
    return markdown(text, cell=True)


def _item(text: Any) -> str:
    """Text from the run in Markdown: rendered as the text it is, on one line."""
    return markdown(text)


def summary_markdown(result: dict[str, Any]) -> str:
    """A short Markdown summary of a run, fit for ``$GITHUB_STEP_SUMMARY``. Everything
    from the run is text, never markup: secrets redacted, control characters shown, HTML
    and Markdown escaped; only the harness's own headings, bold and tables are markup."""
    result = plain_data(result)
    scenario = (result.get("scenario") or {}).get("name", "?")
    verdict = result.get("verdict", "inconclusive")
    lines = [
        f"## mcp-harness: {_item(scenario)} — "
        f"**{_item(VERDICT_LABEL.get(verdict, str(verdict).upper()))}**",
        "",
        f"Run {code(result.get('run_id'))} · started {_item(result.get('started_at'))} · "
        f"{_item(_seconds(result.get('duration_s')))} · backend {_item(result.get('backend'))} "
        f"· seed {_item(result.get('seed'))}",
        "",
        _item(what_happened(result)),
        "",
    ]
    faults = result.get("faults") or []
    lines += [
        "**Faults:** " + (_item("; ".join(_fault_sentence(f) for f in faults)) or "none"),
        "",
    ]
    objectives = result.get("objectives") or []
    if objectives:
        lines += ["| objective | target | measured | verdict |", "| --- | --- | --- | --- |"]
        for o in objectives:
            label = _cell(OBJECTIVE_LABEL.get(o.get("verdict", ""), str(o.get("verdict"))))
            if o.get("verdict") != "met":
                label = f"**{label}**"
            lines.append(
                f"| {_cell(o.get('metric', '?'))} | {_cell(target_text(o))} | "
                f"{_cell(measured_text(o))} | {label} |"
            )
        lines.append("")
    else:
        lines += ["No objectives were set.", ""]
    requests = request_type_rows(result)
    if requests:
        lines += ["**Requests by type**", ""]
        lines += ["| " + " | ".join(REQUEST_TABLE_HEAD) + " |", "|" + " --- |" * 7]
        lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in requests]
        lines.append("")
    figures = key_figures(result)
    if figures:
        lines += ["**Key figures**", ""]
        lines += [f"- {_item(label)}: {_item(value)}" for label, value in figures]
        lines.append("")
    doubts = doubts_of(result)
    if doubts:
        lines += ["**Doubts** (why the figures may be wrong)", ""]
        lines += [f"- {_item(d)}" for d in doubts]
        lines.append("")
    notes = notes_of(result)
    if notes:
        lines += ["**Notes**", ""]
        lines += [f"- {_item(n)}" for n in notes]
        lines.append("")
    return "\n".join(lines)
