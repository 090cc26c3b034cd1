"""junit.xml: a run as test results, so any CI shows its verdict without knowing the harness.

One testcase per objective (a missed one is a ``<failure>``, one not measured an
``<error>``: an inconclusive run must never show green), one per fault (``<error>``
when it was not confirmed), and a ``run conclusive`` testcase carrying the notes and
doubts when the run is inconclusive for a reason no other testcase shows (a doubt, an
unfinished run, a stack that did not come up).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from harness.report.summary import (
    doubts_of,
    measured_text,
    notes_of,
    objective_message,
    run_unfinished,
    target_text,
    verdict_reasons,
    what_happened,
)
from harness.report.text import plain_data


def _testcase(suite: ET.Element, classname: str, name: str) -> ET.Element:
    return ET.SubElement(suite, "testcase", classname=classname, name=name, time="0")


def _objective_case(suite: ET.Element, scenario: str, objective: dict[str, Any]) -> None:
    """Every objective carries what was measured against its target (``properties`` and
    ``system-out``), a met one too: a CI's test view shows the figure, not just green."""
    case = _testcase(suite, f"objectives.{scenario}", str(objective.get("metric", "?")))
    verdict = objective.get("verdict")
    properties = ET.SubElement(case, "properties")
    for name, value in (
        ("measured", measured_text(objective)),
        ("target", target_text(objective)),
        ("verdict", str(verdict)),
    ):
        ET.SubElement(properties, "property", name=name, value=value)
    ET.SubElement(case, "system-out").text = (
        f"{objective.get('metric')}: measured {measured_text(objective)}, "
        f"target {target_text(objective)} ({verdict})"
    )
    if verdict == "met":
        return
    message = objective_message(objective)
    body = (
        f"{objective.get('metric')}: measured {measured_text(objective)}, "
        f"target {target_text(objective)} ({verdict})"
    )
    tag = "failure" if verdict == "missed" else "error"
    kind = "objective missed" if verdict == "missed" else "objective not measured"
    ET.SubElement(case, tag, message=message, type=kind).text = body


def _fault_case(suite: ET.Element, scenario: str, fault: dict[str, Any]) -> bool:
    """True when the fault was confirmed."""
    case = _testcase(suite, f"faults.{scenario}", f"fault {fault.get('kind')} confirmed")
    start, end = fault.get("t_fault_s"), fault.get("t_end_s")
    if isinstance(start, (int, float)) and isinstance(end, (int, float)) and end >= start:
        case.set("time", f"{end - start:.3f}")  # the fault's window, where it has one
    if fault.get("confirmed"):
        return True
    message = (
        f"fault {fault.get('kind')} on {fault.get('target')} (at {fault.get('at_s')} s) "
        "was not confirmed: the run cannot judge recovery from it"
    )
    ET.SubElement(case, "error", message=message, type="fault not confirmed").text = "\n".join(
        filter(None, [message, fault.get("detail")])
    )
    return False


def junit_xml(result: dict[str, Any]) -> str:
    """The run as a JUnit XML document (testsuites > testsuite > testcase). Every string
    from the run is redacted and its control characters shown as escapes (XML 1.0 forbids
    most of them in text and attributes alike: one ESC made a document unparseable)."""
    result = plain_data(result)
    scenario = str((result.get("scenario") or {}).get("name", "scenario"))
    verdict = result.get("verdict", "inconclusive")
    root = ET.Element("testsuites", name="mcp-harness")
    suite = ET.SubElement(root, "testsuite", name=f"mcp-harness.{scenario}")
    properties = ET.SubElement(suite, "properties")
    for name in ("run_id", "verdict", "backend", "seed", "started_at"):
        ET.SubElement(properties, "property", name=name, value=str(result.get(name, "")))

    objectives = result.get("objectives") or []
    for objective in objectives:
        _objective_case(suite, scenario, objective)
    all_confirmed = all(
        [_fault_case(suite, scenario, fault) for fault in result.get("faults") or []]
    )
    shown = not all_confirmed or any(o.get("verdict") != "met" for o in objectives)
    if verdict == "inconclusive" and (doubts_of(result) or run_unfinished(result) or not shown):
        case = _testcase(suite, f"run.{scenario}", "run conclusive")
        reasons = verdict_reasons(result)
        body = reasons + [f"note: {n}" for n in notes_of(result)]
        ET.SubElement(
            case, "error", message="inconclusive: " + "; ".join(reasons), type="run inconclusive"
        ).text = "\n".join(body)

    cases = suite.findall("testcase")
    counts = {
        "tests": len(cases),
        "failures": sum(1 for c in cases if c.find("failure") is not None),
        "errors": sum(1 for c in cases if c.find("error") is not None),
        "skipped": 0,
    }
    duration = f"{float(result.get('duration_s') or 0):.3f}"
    for element in (root, suite):
        element.attrib.update({k: str(v) for k, v in counts.items()}, time=duration)
    suite.set("timestamp", str(result.get("started_at", "")))
    ET.SubElement(suite, "system-out").text = what_happened(result)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
