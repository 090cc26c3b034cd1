"""result.json: the stable contract every report is rendered from (DESIGN.md)."""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from harness.redaction import redact_data

SCHEMA_VERSION = 2
RESULT_FILE = "result.json"


def package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def environment(stack_versions: dict[str, Any]) -> dict[str, Any]:
    """Versions of every part and the machine, so two results can be compared fairly."""
    try:
        mem_kib = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
    except (OSError, StopIteration):
        mem_kib = 0
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
        },
    }


def stamped(result: dict[str, Any]) -> dict[str, Any]:
    """The result as result.json holds it: ``schema_version`` first."""
    return {"schema_version": SCHEMA_VERSION, **result}


def write_result(result_dir: Path, result: dict[str, Any]) -> Path:
    """Write atomically so a reader never sees half a file. Every string is redacted
    (``harness.redaction``): a scenario's server env or headers, a restore error, a
    server event may carry a password or a token."""
    result_dir.mkdir(parents=True, exist_ok=True)
    path = result_dir / RESULT_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(stamped(redact_data(result)), indent=2, default=str))
    tmp.replace(path)
    return path


def read_result(path: Path) -> dict[str, Any]:
    if path.is_dir():
        path = path / RESULT_FILE
    data: dict[str, Any] = json.loads(path.read_text())
    return data
