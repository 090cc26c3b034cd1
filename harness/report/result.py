"""result.json: the stable contract every report is rendered from (docs/outputs.md)."""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

from harness.redaction import redact_data
from harness.stack.prerequisites import package_version

SCHEMA_VERSION = 2
RESULT_FILE = "result.json"


def environment(stack_versions: dict[str, Any]) -> dict[str, Any]:
    """Versions of every part, the machine and the commits, so two results can be compared
    fairly and a drill's record says what ran where."""
    mem_kib = psutil.virtual_memory().total // 1024
    return {
        **stack_versions,
        "mcp_sdk": package_version("mcp"),
        "locust": package_version("locust"),
        "asyncpg": package_version("asyncpg"),
        "harness": package_version("mcp-harness"),
        "python": sys.version.split()[0],
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "memory_gib": round(mem_kib / 1024 / 1024, 1),
            "host": socket.gethostname(),
        },
        "commits": {
            "harness": git_commit(Path(__file__).resolve().parent),
            "working_directory": git_commit(Path.cwd()),
        },
    }


GIT_TIMEOUT_S = 5.0


def git_commit(directory: Path) -> str | None:
    """The commit checked out where ``directory`` is (``-dirty`` when it has changes), or
    None outside a git checkout. The working directory's is the server's when
    ``server.command`` runs from a team's checkout, as it does."""
    try:
        done = subprocess.run(
            ["git", "-C", str(directory), "describe", "--always", "--dirty", "--abbrev=40"],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def runbook_executions(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The runbook watcher's executions in a result (each time it found the stack unhealthy
    and ran), in order; none when the run had no runbook."""
    runbook = (result.get("metrics") or {}).get("runbook")
    executions = runbook.get("executions") if isinstance(runbook, dict) else None
    return [e for e in executions or [] if isinstance(e, dict)]


def runbook_steps(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every runbook step of every execution, in order, with its execution's index and
    start (``t_s``)."""
    return [
        {
            "execution": index,
            "t_s": execution.get("t_s", execution.get("start_s")),
            **{k: step.get(k) for k in ("name", "outcome", "detail", "start_s", "duration_s")},
        }
        for index, execution in enumerate(runbook_executions(result), start=1)
        for step in execution.get("steps") or []
        if isinstance(step, dict)
    ]


def stamped(result: dict[str, Any]) -> dict[str, Any]:
    """The result as result.json holds it: ``schema_version`` first."""
    return {"schema_version": SCHEMA_VERSION, **result}


def write_result(result_dir: Path, result: dict[str, Any]) -> Path:
    """Write atomically so a reader never sees half a file. Every string is redacted
    (``harness.redaction``): a scenario's server env or headers, a restore error, a
    server event may carry a password or a token."""
    result_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(stamped(redact_data(result)), indent=2, default=str)
    return write_atomically(result_dir / RESULT_FILE, text)


def write_atomically(path: Path, text: str) -> Path:
    """A reader (a CI step, a browser) never sees half a file, and a write that fails (a
    full disk) leaves neither half a file nor its temporary copy behind."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


class ResultError(ValueError):
    """A result.json / repeat.json that cannot be read or is not one; the message names
    the file and the key."""


VERDICTS = ("pass", "fail", "inconclusive")
OBJECTIVE_VERDICTS = ("met", "missed", "not_measured")
_NUMBER = (int, float)
_TOP_LEVEL: dict[str, tuple[type, ...]] = {
    "schema_version": (int,),
    "run_id": (str,),
    "scenario": (dict,),
    "backend": (str,),
    "seed": (int,),
    "started_at": (str, type(None)),
    "duration_s": (*_NUMBER, type(None)),
    "complete": (bool,),
    "interrupted": (bool,),
    "faults": (list,),
    "phases": (list,),
    "metrics": (dict,),
    "timeline": (list,),
    "environment": (dict,),
    "notes": (list,),
    "doubts": (list,),
    "doubt_scopes": (list,),
    "objectives": (list,),
    "verdict": (str,),
    "series": (bool,),
    "repeat": (int,),
    "runs": (list,),
    "flaky": (list,),
}
"""The keys every report reads, with the JSON types they must have."""
_ITEMS: dict[str, tuple[type, ...]] = {
    "faults": (dict,),
    "phases": (dict,),
    "timeline": (dict,),
    "notes": (str,),
    "doubts": (str,),
    "objectives": (dict,),
    "runs": (dict,),
    "flaky": (str,),
}


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false"}.get(
        type(value), "null" if value is None else "a number"
    )


def _not_finite(text: str) -> None:
    """NaN / Infinity in a result is no measurement: read as null (not measured)."""
    return None


def _finite_float(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None  # 1e999


def read_result(path: Path) -> dict[str, Any]:
    """A result.json or repeat.json (or the directory holding result.json), checked to be
    one: a JSON object whose keys have the types the reports read. Any problem is a
    ResultError naming the file and the key; nothing else escapes."""
    try:
        if path.is_dir():
            path = path / RESULT_FILE
        text = path.read_bytes().decode("utf-8")
        data = json.loads(text, parse_constant=_not_finite, parse_float=_finite_float)
    except FileNotFoundError:
        raise ResultError(f"{path}: no such file") from None
    except OSError as exc:
        raise ResultError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ResultError(f"{path}: not a result.json (not UTF-8 text)") from None
    except json.JSONDecodeError as exc:
        raise ResultError(f"{path}: not valid JSON: {exc}") from None
    except (RecursionError, ValueError) as exc:
        raise ResultError(f"{path}: cannot be read as JSON ({type(exc).__name__})") from None
    check_result(data, path)
    return dict(data)


def check_result(data: Any, path: Path | str) -> None:
    """Raise ResultError unless ``data`` has the shape of a result (or series) object."""
    if not isinstance(data, dict):
        raise ResultError(f"{path}: expected a JSON object (a result.json), got {_json_type(data)}")
    if "drill_id" in data and "scenarios" in data:
        raise ResultError(
            f"{path}: is a drill.json; give one of its scenarios' result.json instead"
        )
    version = data.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise ResultError(
            f"{path}: schema_version: {version} is newer than this harness reads "
            f"({SCHEMA_VERSION}); upgrade mcp-harness"
        )
    for key, types in _TOP_LEVEL.items():
        if key not in data:
            continue
        value = data[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ResultError(
                f"{path}: {key}: expected {_json_type(types[0]())}, got {_json_type(value)}"
            )
        items = value if key in _ITEMS and isinstance(value, list) else []
        for index, item in enumerate(items):
            if not isinstance(item, _ITEMS[key]):
                raise ResultError(
                    f"{path}: {key}.{index}: expected {_json_type(_ITEMS[key][0]())}, "
                    f"got {_json_type(item)}"
                )
    if "verdict" in data and data["verdict"] not in VERDICTS:
        raise ResultError(
            f"{path}: verdict: {data['verdict']!r} is not one of {', '.join(VERDICTS)}"
        )
    for index, objective in enumerate(data.get("objectives") or []):
        _check_objective(objective, f"{path}: objectives.{index}")


def _check_objective(objective: dict[str, Any], where: str) -> None:
    if not isinstance(objective.get("metric"), str):
        raise ResultError(f"{where}.metric: expected a string")
    if objective.get("verdict") not in OBJECTIVE_VERDICTS:
        raise ResultError(
            f"{where}.verdict: expected one of {', '.join(OBJECTIVE_VERDICTS)}, "
            f"got {objective.get('verdict')!r}"
        )
    if objective.get("bound") not in ("max", "min"):
        raise ResultError(f"{where}.bound: expected max or min, got {objective.get('bound')!r}")
    for key in ("target", "measured", "measured_at_least", "min", "median", "max"):
        value = objective.get(key)
        if value is not None and (not isinstance(value, _NUMBER) or isinstance(value, bool)):
            raise ResultError(f"{where}.{key}: expected a number or null, got {_json_type(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ResultError(f"{where}.{key}: expected a finite number")
