"""``python -m bench``: every benchmark in turn, each in its own process (Locust
monkey-patches the standard library), then one table of all figures and
``results/bench/bench.json``. ``python -m bench generator accuracy`` runs a subset."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict

from bench.common import BENCH_DIR, format_table, machine, read_figures

BENCHES = ("generator", "capacity", "server", "stack", "accuracy")


def main(argv: list[str]) -> int:
    names = argv or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHES)}", file=sys.stderr)
        return 2
    failed: list[str] = []
    started = time.monotonic()
    for name in names:
        print(f"\n== bench {name} ({time.monotonic() - started:.0f} s so far)", flush=True)
        (BENCH_DIR / f"{name}.json").unlink(missing_ok=True)
        if subprocess.call([sys.executable, "-m", f"bench.{name}"]) != 0:
            failed.append(name)
    figures = [
        f
        for n in names
        if (BENCH_DIR / f"{n}.json").exists()
        for f in read_figures(BENCH_DIR / f"{n}.json")
    ]
    print(f"\n== all figures ({time.monotonic() - started:.0f} s)\n{format_table(figures)}")
    out = BENCH_DIR / "bench.json"
    out.write_text(
        json.dumps({"machine": machine(), "figures": [asdict(f) for f in figures]}, indent=2) + "\n"
    )
    print(f"wrote {out}")
    if failed:
        print(f"benchmark(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    missed = [f"{f.bench}: {f.name}" for f in figures if f.met is False]
    if missed:
        print("goals missed: " + "; ".join(missed), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
