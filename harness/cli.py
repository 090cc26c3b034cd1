"""``mcp-harness``: doctor, bootstrap, init, up, run, drill, report, compare, runbook.

Exit codes (docs/objectives.md): 2 bad usage or invalid scenario; else 1 if an objective
was missed; else 3 if inconclusive (an objective not measured, a fault not
confirmed, the stack not up, a missing prerequisite); else 0.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import logging
import math
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from rich.markup import escape
from rich.table import Table

from harness.config import (
    Scenario,
    ScenarioError,
    check_exposure,
    check_id,
    contained,
    control_character,
    load_objectives,
    load_scenario,
    parse_duration_s,
    parse_override,
)
from harness.objectives import (
    EXIT_FAIL,
    EXIT_INCONCLUSIVE,
    EXIT_USAGE,
    JudgedObjective,
    Verdict,
    exit_code,
    judge_all,
    judge_series,
    run_verdict,
    series_verdict,
)
from harness.report.text import output_console
from harness.stack.prerequisites import MissingPrerequisite, doctor_checks, package_version

console = output_console()
err_console = output_console(stderr=True)


def _duration_arg(text: str) -> float:
    try:
        seconds = parse_duration_s(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError("must be greater than zero")
    return seconds


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


MAX_REPEAT = 100
"""``--repeat`` at most: each run takes its run time plus a restore; 100 is days of CPU."""


def _repeat_count(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_REPEAT:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_REPEAT}, got {value}")
    return value


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _add_allow_remote(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback server.url, Locust master address or Postgres "
        "listen_addresses (off: everything stays on this machine)",
    )


EXIT_CODES_HELP = """\
exit codes:
  0  every objective met (a gate passes)
  1  an objective was missed (a gate fails; 0 with --warn-only)
  2  bad usage or invalid input: the message names the file and the key, or the flag
  3  inconclusive: an objective not measured, a fault not confirmed, the stack not up,
     the run interrupted, or a missing prerequisite (doctor says how to install it)"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcp-harness",
        description=__doc__.splitlines()[0] if __doc__ else None,
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--version", action="version", version=f"mcp-harness {package_version('mcp-harness')}"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    _add_doctor(sub)
    _add_bootstrap(sub)
    _add_init(sub)
    _add_up(sub)
    _add_run(sub)
    _add_drill(sub)
    _add_compare(sub)
    _add_runbook(sub)
    _add_report(sub)
    return parser


def _add_doctor(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    doctor = sub.add_parser(
        "doctor", help="check every prerequisite and say how to fix what is missing"
    )
    doctor.add_argument("--pg-bin", help="directory of PostgreSQL server binaries")
    doctor.set_defaults(handler=cmd_doctor)


def _add_bootstrap(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bootstrap = sub.add_parser(
        "bootstrap",
        help="install the native parts pip cannot: toxiproxy-server (built with Go) into a "
        "per-user tool directory, and as root the account Postgres runs as",
    )
    bootstrap.add_argument(
        "--tools-dir",
        type=Path,
        help="where to install (default: $MCP_HARNESS_HOME/tools, else "
        "~/.local/share/mcp-harness/tools, where doctor and the stack look)",
    )
    bootstrap.add_argument(
        "--patroni",
        action="store_true",
        help="also Patroni in a virtualenv there (topology.failover: patroni; etcd comes "
        "from your system's packages)",
    )
    bootstrap.set_defaults(handler=cmd_bootstrap)


def _add_init(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    init = sub.add_parser(
        "init",
        help="start the stack with your server, list its tools over MCP and write a "
        "scenario for it (then: mcp-harness run FILE)",
    )
    how = init.add_mutually_exclusive_group(required=True)
    how.add_argument(
        "--command",
        help="how to start your server, as one shell-style string; {port} and "
        "{database_url} are filled in (e.g. 'python server.py --port {port}')",
    )
    how.add_argument("--url", help="the MCP endpoint of a server you run yourself")
    init.add_argument(
        "-o", "--output", type=Path, default=Path("my_server.yaml"), help="scenario file to write"
    )
    init.add_argument("--force", action="store_true", help="overwrite the output file")
    init.add_argument("--name", help="the scenario's name (default: the output file's name)")
    init.add_argument(
        "--base",
        default="primary_kill",
        help="shipped scenario whose faults, windows and objectives to start from "
        "(default: primary_kill)",
    )
    init.add_argument("--path", default="/mcp", help="your server's MCP endpoint path")
    init.add_argument(
        "--ready",
        help="a path that answers 200 once your server serves (default: the MCP endpoint)",
    )
    init.add_argument(
        "--database-url-env",
        default="DATABASE_URL",
        help="the environment variable your server reads its database URL from",
    )
    init.add_argument(
        "--write-tool",
        help="the tool that writes a row the ledger reads back (default: create_note when "
        "your server lists it)",
    )
    init.add_argument(
        "--write-arguments",
        help="its arguments as JSON; placeholders {id} {title} {body} {checksum} {parent_id} "
        "(default: inferred from the tool's input schema by those names)",
    )
    init.add_argument(
        "--read-sql",
        help="SQL reading (id, content) back for $1::text[] ids (needed unless the write "
        "tool is the reference server's create_note)",
    )
    init.add_argument("--pg-bin", help="directory of PostgreSQL server binaries")
    _add_allow_remote(init)
    init.set_defaults(handler=cmd_init)


def _add_up(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = sub.add_parser(
        "up",
        help="bring the stack up and keep it running until Ctrl-C / SIGTERM (its logs are in run_dir/logs meanwhile; removed when it stops)",
    )
    up.add_argument(
        "scenario", nargs="?", help="scenario whose stack settings to use (default: built-in)"
    )
    up.add_argument(
        "--json", action="store_true", help="print the endpoints as one JSON object on stdout"
    )
    up.add_argument("--pg-bin", help="directory of PostgreSQL server binaries")
    _add_allow_remote(up)
    _add_backend_argument(up)
    up.set_defaults(handler=cmd_up)


def _add_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="run one scenario and judge its objectives")
    run.add_argument("scenario", help="scenario YAML file")
    run.add_argument(
        "-u", "--users", type=int, help="number of simulated MCP clients (overrides load.users)"
    )
    run.add_argument(
        "-r",
        "--spawn-rate",
        type=_finite_float,
        help="clients started per second (overrides load.spawn_rate)",
    )
    run.add_argument(
        "-t",
        "--run-time",
        type=_duration_arg,
        help="run time, e.g. 60s or 2m (overrides load.run_time)",
    )
    run.add_argument("--seed", type=int, help="random seed (overrides seed)")
    run.add_argument(
        "--workers", type=int, help="local Locust worker processes (overrides load.workers)"
    )
    run.add_argument(
        "--remote-workers",
        type=int,
        help="Locust workers you start on other machines; the run prints their command",
    )
    run.add_argument(
        "--master-bind-host", help="address the Locust master listens on for remote workers"
    )
    _add_allow_remote(run)
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any scenario key for this run, e.g. --set load.reconnect.policy=immediate (value in YAML)",
    )
    run.add_argument("--out", default="results", help="results directory (default: results)")
    run.add_argument("--objectives", help="objectives file that replaces the scenario's objectives")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="validate, print the resolved scenario and fault schedule, start nothing",
    )
    run.add_argument(
        "--warn-only", action="store_true", help="report missed objectives but exit 0 for them"
    )
    run.add_argument("--pg-bin", help="directory of PostgreSQL server binaries")
    _add_backend_argument(run)
    run.add_argument(
        "--repeat",
        type=_repeat_count,
        default=1,
        metavar="N",
        help=f"run the scenario N times (1 to {MAX_REPEAT}) on one stack, restored to its "
        "start between runs, and judge each objective over the runs (flaky when they disagree)",
    )
    run.set_defaults(handler=cmd_run)


def _add_drill(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    drill = sub.add_parser(
        "drill",
        help="the disaster-recovery drill: several scenarios, each on a fresh stack, against "
        "declared RTO/RPO targets; drill.json, drill.md and drill.html",
    )
    drill.add_argument(
        "drill_file",
        nargs="?",
        default="quarterly",
        help="drill file, or a shipped drill's name (default: quarterly, the shipped one)",
    )
    drill.add_argument(
        "--objectives", help="objectives file that replaces every scenario's objectives"
    )
    drill.add_argument(
        "--scenarios",
        nargs="+",
        metavar="SCENARIO",
        help="scenario files to run instead of the drill file's list (at their own size)",
    )
    drill.add_argument(
        "--full",
        action="store_true",
        help="full size: drop the drill file's reductions (set:), apply its full: overrides",
    )
    drill.add_argument("--out", default="results", help="results directory (default: results)")
    drill.add_argument(
        "--warn-only", action="store_true", help="report missed objectives but exit 0 for them"
    )
    drill.add_argument("--pg-bin", help="directory of PostgreSQL server binaries")
    _add_allow_remote(drill)
    drill.set_defaults(handler=cmd_drill)


def _add_compare(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    compare = sub.add_parser(
        "compare",
        help="runs side by side (a trend table): ratios to a baseline run, regressions flagged",
    )
    compare.add_argument(
        "results",
        nargs="+",
        help="result.json / repeat.json files or results/<run_id>/ directories, oldest first",
    )
    compare.add_argument(
        "--baseline",
        help="the run the others are compared with: its position (1 = first, the default) "
        "or one of the paths given",
    )
    compare.add_argument(
        "--tolerance",
        default="10%",
        help="how much worse than the baseline a figure may get before it is a regression "
        "(default 10%%)",
    )
    compare.add_argument(
        "--format",
        choices=("text", "json", "markdown"),
        default="text",
        help="text (a table for a terminal or a log), json (for a dashboard or a script), "
        "markdown (for a job summary or a pull request); every figure with its unit",
    )
    compare.add_argument(
        "--fail-on-regression",
        action="store_true",
        help="exit 1 when a figure or a verdict regressed against the baseline",
    )
    compare.set_defaults(handler=cmd_compare)


def _add_runbook(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    runbook = sub.add_parser(
        "runbook",
        help="check (or execute) a runbook against a stack started by `mcp-harness up`",
    )
    mode = runbook.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check-only", action="store_true", help="report health, change nothing")
    mode.add_argument(
        "--execute", action="store_true", help="run the checks and the fixes of unhealthy steps"
    )
    runbook.add_argument(
        "--runbook",
        default="default",
        help="default (the built-in steps) or package.module:NAME (default: default)",
    )
    runbook.add_argument(
        "--stack",
        help="the credentials_file `mcp-harness up` printed (default: the newest running one)",
    )
    runbook.set_defaults(handler=cmd_runbook)


def _add_report(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    report = sub.add_parser(
        "report",
        help="print the verdict table of a result.json (or its run directory) and write "
        "its junit.xml, summary.md and report.html again",
    )
    report.add_argument("result", help="result.json or results/<run_id>/")
    report.add_argument(
        "--out", help="directory for the rendered files (default: beside result.json)"
    )
    report.set_defaults(handler=cmd_report)


def _add_backend_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        choices=("local", "docker"),
        help="where the stack runs (overrides backend): local = processes on this machine, "
        "no Docker; docker = containers (Testcontainers), needs a Docker engine",
    )


def _check_backend(scenario: Scenario, pg_bin: str | None) -> None:
    """What the scenario's backend needs, before anything starts: a Docker engine that
    answers, or the local binaries. MissingPrerequisite (exit 3) says what to do."""
    from harness.stack import prerequisites

    if scenario.backend == "docker":
        prerequisites.docker_engine_version()
        return
    prerequisites.pg_bin_dir(pg_bin), prerequisites.toxiproxy_server()
    prerequisites.pg_run_user()
    if scenario.topology.pooler is not None:
        from harness.stack.pgbouncer import pgbouncer_binary

        pgbouncer_binary()
    if scenario.topology.failover == "patroni":
        from harness.stack.patroni import patroni_binaries

        patroni_binaries()


def _refuse_what_docker_cannot_run(path: str, scenario: Scenario, repeat: int) -> None:
    """A scenario the docker backend cannot run is bad usage (exit 2), found before
    anything starts, with what to do instead."""
    from harness.stack.docker import docker_refusals

    refusals = docker_refusals(scenario)
    if repeat > 1:
        refusals.append(
            "--repeat restores the database between runs (point-in-time restore), which "
            "the docker backend does not implement; use --backend local"
        )
    if refusals:
        raise ScenarioError(f"{path}: " + "\n  ".join(refusals))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except ScenarioError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except MissingPrerequisite as exc:
        err_console.print(
            f"[red]missing prerequisite:[/] {escape(_printable(str(exc)))}\nRun `mcp-harness doctor` for the full list.",
            highlight=False,
            soft_wrap=True,
        )
        return EXIT_INCONCLUSIVE
    except OSError as exc:
        _error(_os_error(exc), label="environment")
        return EXIT_INCONCLUSIVE
    except Exception as exc:  # a bug: exit 1 means "an objective was missed", nothing else
        _error(
            f"internal error (a bug in mcp-harness): {type(exc).__name__}: {exc}"
            + ("" if args.verbose else "; run again with -v for the traceback"),
            label="error",
        )
        if args.verbose:
            err_console.print(escape(traceback.format_exc()), highlight=False)
        return EXIT_INCONCLUSIVE


def _printable(text: str) -> str:
    """A message for the terminal: control characters (an escape sequence in a scenario
    name, say) and lone surrogates shown escaped, never sent to the terminal as such."""
    if not control_character(text, multiline=True):
        return text
    return "".join(
        ch if ch in "\n\t" or not control_character(ch) else ascii(ch)[1:-1] for ch in text
    )


def _error(message: str, label: str = "error") -> None:
    err_console.print(
        f"[red]{label}:[/] {escape(_printable(message))}", highlight=False, soft_wrap=True
    )


def _os_error(exc: OSError) -> str:
    """An OSError from the machine (a full disk, a file it cannot write): what and where.
    Outputs are written to a temporary file and renamed, so none is left half-written."""
    where = f"{exc.filename}: " if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"{where}no space left on the device (or quota exceeded); the file was not "
            "written (outputs are replaced only when complete): free space and run again"
        )
    return f"{where}{exc.strerror or exc}"


def _output_dir(flag: str, value: str) -> Path:
    """An output directory given by a flag, created now: a bad --out is bad usage (exit 2),
    found before anything starts."""
    path = Path(value)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "not writable", str(path))
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise ScenarioError(f"{flag} {value}: cannot write there: {exc.strerror or exc}") from None
    except ValueError as exc:  # a NUL byte
        raise ScenarioError(f"{flag} {value!r}: not a usable path: {exc}") from None
    return path


def cmd_doctor(args: argparse.Namespace) -> int:
    table = Table(title="mcp-harness doctor")
    for column in ("part", "status", "version / detail", "fix"):
        table.add_column(column)
    missing = False
    for check in doctor_checks(args.pg_bin):
        status = (
            "[green]ok[/]"
            if check.ok
            else ("[red]missing[/]" if check.required else "[yellow]optional[/]")
        )
        missing |= check.required and not check.ok
        table.add_row(check.name, status, check.detail, "" if check.ok else check.fix)
    console.print(table)
    if missing:
        err_console.print(
            "[red]something needed is missing[/]: run the fix shown, or `mcp-harness "
            "bootstrap` (`make bootstrap` in a checkout)."
        )
        return EXIT_INCONCLUSIVE
    return 0


def cmd_bootstrap(args: argparse.Namespace) -> int:
    from harness.stack.bootstrap import bootstrap
    from harness.stack.prerequisites import user_tools_dir

    tools_dir = args.tools_dir or user_tools_dir()
    bootstrap(tools_dir.resolve(), lambda line: console.print(escape(line)), patroni=args.patroni)
    console.print("done: `mcp-harness doctor` lists every part")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from harness.init_scenario import InitRequest, write_scenario_for_server

    request = InitRequest(
        command=args.command,
        url=args.url,
        output=args.output,
        overwrite=args.force,
        name=args.name,
        base=args.base,
        path=args.path,
        ready=args.ready,
        database_url_env=args.database_url_env,
        write_tool=args.write_tool,
        write_arguments=args.write_arguments,
        read_sql=args.read_sql,
        allow_remote=args.allow_remote,
    )
    return write_scenario_for_server(
        request, pg_bin=args.pg_bin, say=lambda line: console.print(escape(line))
    )


def _scenario_for(args: argparse.Namespace) -> Scenario:
    overrides: dict[str, Any] = {}
    for flag, key in (
        ("users", "load.users"),
        ("spawn_rate", "load.spawn_rate"),
        ("run_time", "load.run_time"),
        ("seed", "seed"),
        ("workers", "load.workers"),
        ("remote_workers", "load.remote_workers"),
        ("master_bind_host", "load.master_bind_host"),
        ("backend", "backend"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            overrides[key] = value
    for item in getattr(args, "set", []):
        key, value = parse_override(item)
        overrides[key] = value
    scenario = load_scenario(args.scenario, overrides, allow_remote=args.allow_remote)
    if getattr(args, "objectives", None):
        scenario = scenario.model_copy(update={"objectives": load_objectives(args.objectives)})
    return scenario


def _print_dry_run(scenario: Scenario) -> None:
    """The resolved scenario as YAML on stdout (``--dry-run > resolved.yaml`` is a scenario
    file); the verdict on it and the fault schedule on stderr."""
    err_console.print(f"[bold]{escape(scenario.name)}[/]: valid. Resolved scenario on stdout.")
    sys.stdout.write(yaml.safe_dump(scenario.model_dump(mode="json"), sort_keys=False))
    sys.stdout.flush()
    table = Table(title="Fault schedule (seconds from the start of the load)")
    for column in ("at", "fault", "then"):
        table.add_column(column)
    for fault in scenario.faults:
        then = ""
        if fault.kind == "kill_primary" and scenario.recovery.promote_after is not None:
            then = f"promote the replica {scenario.recovery.promote_after:g} s later"
        table.add_row(f"{fault.at:g}", fault.kind, then)
    table.add_row(f"{scenario.load.run_time:g}", "end of load", "")
    err_console.print(table)


def cmd_run(args: argparse.Namespace) -> int:
    scenario = _scenario_for(args)  # refuses what is not on this machine (check_exposure)
    try:
        scenario.server.resolved_headers()  # a missing ${VAR} stops here, before anything starts
    except ScenarioError as exc:
        raise ScenarioError(f"{args.scenario}: {exc}") from None
    if scenario.backend == "docker":
        _refuse_what_docker_cannot_run(args.scenario, scenario, args.repeat)
    if args.dry_run:
        _print_dry_run(scenario)
        return 0
    _check_backend(scenario, args.pg_bin)
    out = _output_dir("--out", args.out)
    verdict = asyncio.run(_run(scenario, out, args.pg_bin, args.allow_remote, repeat=args.repeat))
    return exit_code([verdict], warn_only=args.warn_only)


async def _run(
    scenario: Scenario,
    out: Path,
    pg_bin: str | None,
    allow_remote: bool = False,
    repeat: int = 1,
    result_dir: Path | None = None,
) -> Verdict:
    """Run the scenario (``repeat`` times on one stack), write every output, print the
    verdict table(s); the verdict of the run, or of the series. ``result_dir`` replaces
    ``out/<run_id>`` (a drill's scenario subfolder)."""
    from harness.report.live import LiveProgress
    from harness.report.result import environment
    from harness.run import PlannedRun, execute_series, new_run_id

    run_id = check_id(new_run_id(scenario), "run id")
    root = result_dir if result_dir is not None else out
    base_dir = contained(root, root / ("" if result_dir is not None else run_id), "run directory")
    runs = (
        [PlannedRun(run_id, base_dir)]
        if repeat == 1
        else [
            PlannedRun(f"{run_id}-r{i}", contained(base_dir, base_dir / f"run-{i}", "run"))
            for i in range(1, repeat + 1)
        ]
    )
    logs_dir = base_dir / "logs"
    logs_dir.mkdir(parents=True, exist_ok=True)
    (logs_dir / "scenario.yaml").write_text(
        yaml.safe_dump(scenario.model_dump(mode="json"), sort_keys=False)
    )
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: task.cancel() if task else None)
    err_console.print(f"run {run_id}: results in {base_dir}", markup=False, highlight=False)
    with LiveProgress(err_console, scenario.load.run_time) as progress:
        records = await _until_stopped(
            execute_series(
                scenario,
                runs,
                logs_dir=logs_dir,
                pg_bin=pg_bin,
                observer=progress,
                environment=environment,
                allow_remote=allow_remote,
            )
        )
    results = [_conclude(record, run.result_dir) for run, record in zip(runs, records, strict=True)]
    if repeat == 1:
        verdict: Verdict = results[0][1]["verdict"]
        return verdict
    return _conclude_series(run_id, scenario, base_dir, results)


def _conclude(record: Any, result_dir: Path) -> tuple[Path, dict[str, Any]]:
    """Judge one run's objectives, write result.json and the reports, print its table."""
    from harness.report.console import render
    from harness.report.outputs import write_outputs
    from harness.report.result import stamped, write_result

    judged = judge_all(record.scenario.objectives, record.metrics, record.doubts)
    result = record.result()
    result["objectives"] = [j.as_dict() for j in judged]
    result["verdict"] = run_verdict(
        judged,
        faults_confirmed=record.faults_confirmed,
        stack_up=record.stack_up,
        complete=record.complete,
    )
    path = write_result(result_dir, result)
    write_outputs(result_dir, stamped(result))
    render(result, console)
    console.print(
        f"result: {path} (report.html, junit.xml, summary.md and metrics.prom beside it)",
        markup=False,
        highlight=False,
    )
    return result_dir, result


def _conclude_series(
    series_id: str, scenario: Scenario, base_dir: Path, results: list[tuple[Path, dict[str, Any]]]
) -> Verdict:
    from harness.report.series import render_series, series_result, write_series

    judged = judge_series(
        [[JudgedObjective.from_dict(o) for o in r["objectives"]] for _, r in results]
    )
    verdict = series_verdict([r["verdict"] for _, r in results])
    series = series_result(series_id, scenario.model_dump(mode="json"), results, judged, verdict)
    write_series(base_dir, series)
    render_series(series, console)
    console.print(f"series: {base_dir / 'repeat.json'}", markup=False, highlight=False)
    return verdict


async def _until_stopped(coro: Any) -> Any:
    """Run the scenario so that Ctrl-C cancels it once and still lets it clean up and return
    its record; a second Ctrl-C during cleanup does not interrupt the cleanup."""

    from harness.run import to_completion

    def again() -> None:
        err_console.print("already stopping: the stack is being brought down")

    return await to_completion(coro, cancel_first=True, again=again)


def cmd_drill(args: argparse.Namespace) -> int:
    """Every scenario validated first (exit 2 names the file and the key), then each run as
    ``run`` runs it on a fresh stack, into ``<out>/<drill_id>/<scenario name>/``."""
    from harness.drill import drill_size, load_drill, new_drill_id, plan_drill, run_drill
    from harness.report.drill import write_drill
    from harness.report.summary import number
    from harness.stack.prerequisites import pg_bin_dir, pg_run_user, toxiproxy_server

    drill = load_drill(args.drill_file)
    objectives = load_objectives(args.objectives) if args.objectives else None
    planned = plan_drill(
        args.drill_file,
        drill,
        full=args.full,
        scenario_files=args.scenarios,
        objectives=objectives,
        allow_remote=args.allow_remote,
    )
    drill_id = new_drill_id(args.drill_file)
    pg_bin_dir(args.pg_bin), toxiproxy_server(), pg_run_user()
    out = _output_dir("--out", args.out)
    drill_dir = contained(out, out / drill_id, "drill directory")
    err_console.print(
        f"drill {drill_id}: {len(planned)} scenario(s), results in {drill_dir}", highlight=False
    )

    def run_one(item: Any, scenario_dir: Path) -> Verdict:
        err_console.print(
            f"[bold]drill scenario {escape(item.name)}[/] ({escape(str(item.file))})",
            highlight=False,
        )
        verdict: Verdict = asyncio.run(
            _run(
                item.scenario,
                out,
                args.pg_bin,
                args.allow_remote,
                result_dir=contained(drill_dir, scenario_dir, f"drill scenario {item.name}"),
            )
        )
        return verdict

    size = drill_size(full=args.full, scenario_files=args.scenarios)
    result = run_drill(drill_id, drill.targets, planned, drill_dir, run_one, size)
    written = write_drill(drill_dir, result)
    table = Table(title=f"drill {drill_id}: {result['verdict'].upper()}")
    for column in ("scenario", "verdict", "RTO (s)", "RPO (s)", "RPO rows"):
        table.add_column(column)
    for entry in result["scenarios"]:
        table.add_row(
            entry["name"],
            entry["verdict"],
            number(entry["rto"]["measured_s"]),
            number(entry["rpo"]["measured_s"]),
            number(entry["rpo"]["measured_rows"]),
        )
    console.print(table)
    for gap in result["gaps"]:
        console.print(
            f"gap: {escape(gap['scenario'])}: {escape(gap['what'])}: {escape(gap['detail'])}",
            highlight=False,
        )
    console.print("drill: " + ", ".join(str(p) for p in written), highlight=False)
    return exit_code([result["verdict"]], warn_only=args.warn_only)


def cmd_up(args: argparse.Namespace) -> int:
    overrides = {"backend": args.backend} if args.backend else {}
    if args.scenario:
        scenario = load_scenario(args.scenario, overrides, allow_remote=args.allow_remote)
    else:
        scenario = Scenario.model_validate({"name": "up", **overrides})
        check_exposure(scenario, allow_remote=args.allow_remote, source="built-in scenario")
    if scenario.backend == "docker":
        _check_backend(scenario, args.pg_bin)
    return asyncio.run(_up(scenario, args.json, args.pg_bin))


async def _up(scenario: Scenario, as_json: bool, pg_bin: str | None) -> int:
    from harness.stack import open_stack

    stack = open_stack(scenario, pg_bin=pg_bin)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    async with stack:
        from harness.stack.attached import CREDENTIALS_FILE, write_credentials

        credentials = write_credentials(
            Path(stack.endpoints.run_dir) / CREDENTIALS_FILE, stack, os.getpid()
        )
        try:
            shown = {**stack.endpoints.redacted(), "credentials_file": str(credentials)}
            if as_json:
                print(json.dumps(shown), flush=True)
            else:
                table = Table(title="stack up (Ctrl-C to stop); passwords are in credentials_file")
                table.add_column("endpoint")
                table.add_column("address")
                for name, value in shown.items():
                    table.add_row(name, value)
                console.print(table)
            await stopping.wait()
            err_console.print("stopping the stack")
        finally:
            credentials.unlink(missing_ok=True)  # its passwords and tokens end with the stack
    stack.remove_run_dir()  # its logs were there to read while it ran; nothing is left behind
    return 0


def cmd_runbook(args: argparse.Namespace) -> int:
    """Exit 0 when every step is healthy (or was fixed), 1 when the runbook left gaps."""
    from harness.runbook import RunbookLoadError
    from harness.runbook.context import RunbookContext
    from harness.runbook.steps import runbook_for
    from harness.stack import StackError
    from harness.stack.attached import AttachedStack, running_stack_credentials

    try:
        credentials = Path(args.stack) if args.stack else running_stack_credentials()
        stack = AttachedStack(credentials)
        runbook = runbook_for(args.runbook, Scenario(name="runbook"))
    except (StackError, RunbookLoadError) as exc:
        err_console.print(f"[red]error:[/] {escape(str(exc))}")
        return EXIT_USAGE

    async def execute() -> Any:
        await stack.up()
        say = lambda text: err_console.print(escape(text))  # noqa: E731
        return await runbook.execute(RunbookContext(stack, say), check_only=args.check_only)

    record = asyncio.run(execute())
    table = Table(
        title=f"runbook {args.runbook} on {credentials} ({'check only' if args.check_only else 'executed'})"
    )
    for column in ("step", "outcome", "seconds", "detail"):
        table.add_column(column, justify="right" if column == "seconds" else "left")
    for step in record.steps:
        table.add_row(step.name, str(step.outcome), f"{step.duration_s:.2f}", escape(step.detail))
    console.print(table)
    for action in record.actions:
        console.print(
            f"  {action.step} {action.action}: {action.outcome} in {action.duration_s:.2f} s "
            f"{escape(action.detail)}",
            highlight=False,
        )
    return 0 if record.healthy else EXIT_FAIL


RENDER_ERRORS = (TypeError, AttributeError, KeyError, IndexError, ValueError)
"""What a renderer raises on a result.json whose deeper members have the wrong shape
(``read_result`` checks the members every report reads; a damaged file can hold more)."""


def cmd_report(args: argparse.Namespace) -> int:
    from harness.report.console import render
    from harness.report.outputs import write_outputs
    from harness.report.result import RESULT_FILE, ResultError, read_result

    path = Path(args.result)
    try:
        result = read_result(path)
    except ResultError as exc:
        _error(str(exc))
        return EXIT_USAGE
    out = (
        _output_dir("--out", args.out)
        if args.out
        else (path if path.name != RESULT_FILE else path.parent)
    )
    try:
        render(result, console)
        written = write_outputs(out, result)
    except RENDER_ERRORS as exc:
        _error(f"{path}: not a result this version can render ({type(exc).__name__}: {exc})")
        return EXIT_USAGE
    console.print("written: " + ", ".join(str(p) for p in written), highlight=False)
    return exit_code([result.get("verdict", "inconclusive")])


def cmd_compare(args: argparse.Namespace) -> int:
    from harness.report.compare import (
        comparison_document,
        comparison_markdown,
        parse_tolerance,
        render,
    )
    from harness.report.result import ResultError, read_result
    from harness.report.series import SERIES_FILE

    try:
        baseline = _baseline_index(args.baseline, args.results)
        tolerance = parse_tolerance(args.tolerance)
    except ValueError as exc:
        _error(str(exc))
        return EXIT_USAGE
    results: list[dict[str, Any]] = []
    labels: list[str] = []
    for item in args.results:
        path = Path(item)
        try:
            if path.is_dir() and (path / SERIES_FILE).exists():
                path = path / SERIES_FILE
            results.append(read_result(path))
        except (ResultError, OSError, ValueError) as exc:
            _error(str(exc) if isinstance(exc, ResultError) else f"{path}: {exc}")
            return EXIT_USAGE
        labels.append(f"run {len(labels) + 1}")
    try:
        if args.format == "text":
            regressions = render(results, labels, console, baseline=baseline, tolerance=tolerance)
        else:
            document = comparison_document(results, labels, baseline=baseline, tolerance=tolerance)
            for run, item in zip(document["runs"], args.results, strict=True):
                run["source"] = item
            regressions = document["regressions"]
            text = (
                json.dumps(document, indent=2, allow_nan=False) + "\n"
                if args.format == "json"
                else comparison_markdown(document)
            )
            sys.stdout.write(text)
    except RENDER_ERRORS as exc:
        _error(f"{', '.join(args.results)}: cannot be compared ({type(exc).__name__}: {exc})")
        return EXIT_USAGE
    if args.format == "text":
        for label, item in zip(labels, args.results, strict=True):
            console.print(f"{label}: {item}", highlight=False)
    return EXIT_FAIL if regressions and args.fail_on_regression else 0


def _baseline_index(baseline: str | None, given: list[str]) -> int:
    if baseline is None:
        return 0
    if baseline in given:
        return given.index(baseline)
    if baseline.isdigit() and 1 <= int(baseline) <= len(given):
        return int(baseline) - 1
    raise ValueError(
        f"--baseline {baseline!r}: give a position from 1 to {len(given)} or one of the paths"
    )


if __name__ == "__main__":
    sys.exit(main())
