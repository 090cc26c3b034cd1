"""One redaction for every output: every shape a secret takes in a DSN, a header, an
environment dump, YAML, JSON or a log line is masked, and innocent text is left alone."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from harness.redaction import copy_redacted, redact, redact_data, redact_stream
from harness.stack import redact as stack_redact

SECRET = "s3cr3t-Pa55"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            f"postgresql://app:{SECRET}@127.0.0.1:5432/notes",
            "postgresql://app:***@127.0.0.1:5432/notes",
        ),
        (f"postgres://:{SECRET}@db/notes", "postgres://:***@db/notes"),
        (f"postgresql://app:p@ss{SECRET}@h/db", "postgresql://app:***@h/db"),
        (
            f"postgresql://app@h:5432/db?password={SECRET}&sslmode=require",
            "postgresql://app@h:5432/db?password=***&sslmode=require",
        ),
        (
            f"postgresql://h/db?sslmode=require&sslpassword={SECRET}",
            "postgresql://h/db?sslmode=require&sslpassword=***",
        ),
        (
            f"host=127.0.0.1 port=5432 password={SECRET} user=app dbname=notes",
            "host=127.0.0.1 port=5432 password=*** user=app dbname=notes",
        ),
        ("host=h password='se cret' user=app", "host=h password='***' user=app"),
        (r"host=h password = 'se\' cret' user=app", "host=h password = '***' user=app"),
        (f"Authorization: Bearer {SECRET}", "Authorization: Bearer ***"),
        ("authorization: bearer abc", "authorization: bearer ***"),
        (f"PGPASSWORD={SECRET}", "PGPASSWORD=***"),
        (f"export PGPASSWORD='{SECRET} x'", "export PGPASSWORD='***'"),
        (f"MCP_ADMIN_TOKEN={SECRET}", "MCP_ADMIN_TOKEN=***"),
        (f"password: {SECRET}", "password: ***"),
        (f'  password: "{SECRET} two"', '  password: "***"'),
        (f"client_secret={SECRET}", "client_secret=***"),
        (f"X-Api-Key: {SECRET}", "X-Api-Key: ***"),
        (
            f"Server=db;Uid=app;Pwd={SECRET};Database=notes",
            "Server=db;Uid=app;Pwd=***;Database=notes",
        ),
        (f'password="{SECRET} never closed', 'password="***'),
    ],
)
def test_every_shape_of_a_secret_is_masked(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert redact(expected) == expected  # idempotent


def test_a_json_string_holding_a_dsn_stays_json() -> None:
    document = json.dumps(
        {"dsn": f"postgresql://app:{SECRET}@h/db", "password": f"{SECRET} x", "n": 1}
    )
    masked = redact(document)
    assert SECRET not in masked
    assert json.loads(masked) == {"dsn": "postgresql://app:***@h/db", "password": "***", "n": 1}


def test_json_escaped_inside_a_json_log_line() -> None:
    inner = json.dumps({"password": SECRET, "user": "app"})
    line = json.dumps({"level": "error", "msg": f"connect failed: {inner}"})
    masked = redact(line)
    assert SECRET not in masked
    assert json.loads(masked)["msg"] == 'connect failed: {"password": "***", "user": "app"}'


def test_an_environment_dump() -> None:
    dump = (
        f"PATH=/usr/bin\nPGUSER=app\nPGPASSWORD={SECRET}\nPOSTGRES_PASSWORD={SECRET}x\nHOME=/root\n"
    )
    assert redact(dump) == (
        "PATH=/usr/bin\nPGUSER=app\nPGPASSWORD=***\nPOSTGRES_PASSWORD=***\nHOME=/root\n"
    )
    as_list = str([f"PGPASSWORD={SECRET}", "PGUSER=app"])
    assert redact(as_list) == "['PGPASSWORD=***', 'PGUSER=app']"


def test_a_token_header_inside_a_log_line() -> None:
    line = (
        "2026-01-01 12:00:00 INFO httpx request headers="
        f"{{'host': 'x', 'authorization': 'Bearer {SECRET}'}} status=401"
    )
    masked = redact(line)
    assert SECRET not in masked
    assert "'authorization': 'Bearer ***'" in masked and "status=401" in masked
    assert redact(f"sent ('Authorization', 'Bearer {SECRET}')") == (
        "sent ('Authorization', 'Bearer ***')"
    )


def test_several_secrets_on_one_line() -> None:
    line = (
        f"dsn=postgresql://a:{SECRET}1@h/x other host=h password={SECRET}2 "
        f"Authorization: Bearer {SECRET}3 PGPASSWORD={SECRET}4 url=http://h/?token={SECRET}5&x=1"
    )
    masked = redact(line)
    assert SECRET not in masked
    assert masked.count("***") == 5
    assert masked.endswith("token=***&x=1")


@pytest.mark.parametrize(
    "text",
    [
        "password policy",
        "the password policy requires 12 characters",
        'FATAL:  password authentication failed for user "app"',
        "the bearer of bad news",
        "max_tokens=100 password_file=/run/secrets/pw passwords: 3",
        "http://127.0.0.1:8080/mcp and postgresql://app@h:5432/db",
        "tokens per second: 40",
        "password:",
        "",
    ],
)
def test_innocent_text_is_left_alone(text: str) -> None:
    assert redact(text) == text


def test_the_stack_redact_is_the_same_function() -> None:
    line = f"host=h password={SECRET} Authorization: Bearer {SECRET}"
    assert stack_redact(line) == redact(line)
    assert SECRET not in stack_redact(line)


def test_data_is_redacted_by_value_and_by_key() -> None:
    data = {
        "notes": [f"pg down: postgresql://app:{SECRET}@h/db"],
        "server": {
            "env": {"DATABASE_URL": f"postgresql://app:{SECRET}@h/db", "PGPASSWORD": SECRET},
            "headers": {"Authorization": "Basic abc", "X-Trace": "1"},
        },
        "count": 3,
        "empty_password": {"password": ""},
    }
    masked = redact_data(data)
    assert SECRET not in json.dumps(masked)
    assert masked["server"]["env"]["PGPASSWORD"] == "***"
    assert masked["server"]["headers"] == {"Authorization": "***", "X-Trace": "1"}
    assert masked["count"] == 3 and masked["empty_password"] == {"password": ""}
    assert SECRET in json.dumps(data)  # a copy: the original is untouched


def test_a_log_is_redacted_line_by_line_while_copied(tmp_path: Path) -> None:
    source = tmp_path / "postgres.log"
    source.write_bytes(
        b"LOG:  starting\r\n"
        + f"FATAL: could not connect: host=h password={SECRET} user=app\n".encode()
        + b"binary \xff\xfe kept\n"
        + f"Authorization: Bearer {SECRET}".encode()  # no newline at the end
    )
    target = copy_redacted(source, tmp_path / "copy.log")
    data = target.read_bytes()
    assert SECRET.encode() not in data
    assert data == (
        b"LOG:  starting\r\n"
        b"FATAL: could not connect: host=h password=*** user=app\n"
        b"binary \xff\xfe kept\n"
        b"Authorization: Bearer ***"
    )
    assert target.stat().st_mtime == pytest.approx(source.stat().st_mtime)


@pytest.mark.parametrize("offset", range(0, 40, 3))
def test_a_line_longer_than_a_chunk_never_cuts_a_secret(offset: int) -> None:
    """Whatever the chunk boundaries, a secret in a huge line is masked whole."""
    filler = "x" * (50 + offset)
    line = (
        f"{filler} password={SECRET}{SECRET} "
        + "y" * 30
        + f' {{"token": "{SECRET}"}} '
        + "z" * 70
        + f" Bearer {SECRET}\n"
    )
    sink = io.StringIO()
    redact_stream(io.StringIO(line * 3), sink, chunk_chars=16, overlap_chars=24)
    assert SECRET not in sink.getvalue()
    assert sink.getvalue() == redact(line) * 3


@pytest.mark.parametrize("length", [800, 5000])
def test_a_secret_longer_than_a_chunk_is_masked_to_its_end(length: int) -> None:
    """Held back whole while it fits in the chunks a stream may hold; longer, the rest of
    its line is masked too. The next line is untouched either way."""
    huge = ("A1b2" * length)[:length]
    sink = io.StringIO()
    redact_stream(
        io.StringIO(f"start token={huge} after\nnext line\n"),
        sink,
        chunk_chars=64,
        overlap_chars=16,
    )
    out = sink.getvalue()
    assert "A1b2" not in out
    assert out.startswith("start token=***") and out.endswith("\nnext line\n")
    assert len(out) < 200


# -- where the run writes ------------------------------------------------------------------


def test_result_notes_and_doubts_carry_no_secret() -> None:
    from harness.config import Scenario
    from harness.objectives import Doubt
    from harness.run import RunRecord

    record = RunRecord("run-1", Scenario(name="pw"), "2026-01-01T00:00:00+00:00")
    record.notes.append(
        f"the stack did not come up: FATAL for postgresql://app:{SECRET}@h/db\n"
        f"Log tail:\nhost=h password={SECRET} user=app\nAuthorization: Bearer {SECRET}"
    )
    record.doubts.append(Doubt(f"probe failed: PGPASSWORD={SECRET}", ("writes",)))
    result = record.result()
    text = json.dumps({k: result[k] for k in ("notes", "doubts", "doubt_scopes")})
    assert SECRET not in text
    assert result["doubts"] == ["probe failed: PGPASSWORD=***"]
    assert result["doubt_scopes"] == [
        {"reason": "probe failed: PGPASSWORD=***", "touches": ["writes"], "lower_bounds": []}
    ]
    assert result["notes"][-1] == result["doubts"][0]  # still recognised as the doubt


def test_logs_collected_into_the_results_are_redacted(tmp_path: Path) -> None:
    from harness.run import _collect_logs

    run_dir, logs_dir = tmp_path / "run", tmp_path / "logs"
    run_dir.mkdir()
    logs_dir.mkdir()
    (run_dir / "mcp-server.log").write_text(
        f"connecting to postgresql://app:{SECRET}@127.0.0.1:5432/notes\nready\n"
    )
    (run_dir / "locust.log").write_text(f"env PGPASSWORD={SECRET} MCP_ADMIN_TOKEN={SECRET}\n")

    class Logs:
        def log_paths(self) -> list[str]:
            return [str(run_dir / "mcp-server.log"), str(run_dir / "locust.log"), "/nonexistent"]

    _collect_logs(Logs(), logs_dir)  # type: ignore[arg-type]
    copied = {p.name: p.read_text() for p in logs_dir.iterdir()}
    assert copied == {
        "mcp-server.log": "connecting to postgresql://app:***@127.0.0.1:5432/notes\nready\n",
        "locust.log": "env PGPASSWORD=*** MCP_ADMIN_TOKEN=***\n",
    }


def test_result_json_is_written_redacted(tmp_path: Path) -> None:
    from harness.report.result import write_result

    result = {
        "scenario": {
            "server": {
                "env": {"DATABASE_URL": f"postgresql://app:{SECRET}@h/db", "API_TOKEN": SECRET},
                "headers": {"Authorization": f"Bearer {SECRET}"},
            }
        },
        "metrics": {"restore": {"error": f"pg_basebackup: password={SECRET} failed"}},
        "timeline": [{"t_s": 1, "events": [f"server said PGPASSWORD={SECRET}"]}],
    }
    text = write_result(tmp_path, result).read_text()
    assert SECRET not in text
    written = json.loads(text)
    assert written["scenario"]["server"]["env"] == {
        "DATABASE_URL": "postgresql://app:***@h/db",
        "API_TOKEN": "***",
    }
    assert written["scenario"]["server"]["headers"] == {"Authorization": "***"}
