"""Rates from the servers' /metrics: each rate check compares two scrapes of the
counters, over a window it keeps (``CounterHistory``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import httpx2

from harness.measure.exposition import (
    ExpositionError,
    SeriesKey,
    counter_increase,
    parse_metrics,
    total,
)
from harness.runbook.context import RunbookContext
from harness.runbook.engine import (
    Clock,
)

MAX_SPAN_TO_SAMPLE_S = 2.0
"""A rate check with no recent sample of its own samples twice this far apart (at most)."""


Scrape = Callable[[], Awaitable[dict[str, dict[SeriesKey, float] | str]]]
"""Every server instance's /metrics: parsed series by URL, or why it could not be read."""


def metrics_scraper(ctx: RunbookContext) -> Scrape:
    async def scrape() -> dict[str, dict[SeriesKey, float] | str]:
        urls = ctx.stack.server_metrics_urls()
        async with httpx2.AsyncClient(timeout=ctx.http_timeout_s) as http:
            replies = await asyncio.gather(*(http.get(u) for u in urls), return_exceptions=True)
        found: dict[str, dict[SeriesKey, float] | str] = {}
        for url, reply in zip(urls, replies, strict=True):
            if isinstance(reply, BaseException):
                found[url] = f"{type(reply).__name__}: {reply}"
            elif reply.status_code != 200:
                found[url] = f"HTTP {reply.status_code}"
            else:
                try:
                    found[url] = parse_metrics(reply.text)
                except ExpositionError as exc:
                    found[url] = str(exc)
        return found

    return scrape


class MetricsUnavailable(RuntimeError):
    """No server instance's /metrics could be read (a user's server may have none)."""


@dataclass(frozen=True)
class CounterWindow:
    """How much the servers' counters grew over ``span_s`` (summed over the instances)."""

    span_s: float
    increase: dict[SeriesKey, float]
    unread: tuple[str, ...] = ()
    """Instances left out: their /metrics did not answer now or at the window's start."""

    def rate(self, name: str, **labels: str) -> float:
        return total(self.increase, name, **labels) / self.span_s

    def note(self) -> str:
        return f"; not read: {', '.join(self.unread)}" if self.unread else ""


@dataclass
class CounterHistory:
    """The samples a rate check took, for up to ``window_s``: each check compares now with
    the oldest one still in the window, so a runbook run every second sees the rate over
    the last ``window_s`` and a single run still sees what happened since the previous
    one. With no sample at least ``min_span_s`` old, it samples now and again after
    ``min_span_s`` (the check waits that long)."""

    window_s: float
    min_span_s: float
    samples: list[tuple[float, dict[str, dict[SeriesKey, float]]]] = field(default_factory=list)

    def forget(self) -> None:
        """Drop every sample (after a fix: the re-check sees only what came after it)."""
        self.samples.clear()

    async def window(self, clock: Clock, scrape: Scrape) -> CounterWindow:
        for attempt in range(2):
            now = clock.now()
            read = await scrape()
            if not read:
                raise MetricsUnavailable("the stack lists no server /metrics (a user's server)")
            current = {url: s for url, s in read.items() if not isinstance(s, str)}
            if not current:
                errors = "; ".join(f"{url}: {e}" for url, e in read.items())
                raise MetricsUnavailable(f"no server's /metrics answered ({errors})")
            self.samples = [(t, s) for t, s in self.samples if now - t <= self.window_s]
            start = self.samples[0] if self.samples else None
            self.samples.append((now, current))
            # The second sample is min_span_s after the first (a sleep may wake a hair early).
            if start is not None and (now - start[0] >= self.min_span_s or attempt == 1):
                return _window(start, (now, current), read)
            waited = now - start[0] if start is not None else 0.0
            await clock.sleep(self.min_span_s - waited)
        raise AssertionError("the second round always has a sample to start from")


def _window(
    start: tuple[float, dict[str, dict[SeriesKey, float]]],
    end: tuple[float, dict[str, dict[SeriesKey, float]]],
    read: Mapping[str, object],
) -> CounterWindow:
    increase: dict[SeriesKey, float] = {}
    for url, after in end[1].items():
        before = start[1].get(url)
        if before is None:
            continue
        for key, grew in counter_increase(before, after).items():
            increase[key] = increase.get(key, 0.0) + grew
    unread = tuple(sorted(u for u in read if u not in end[1] or u not in start[1]))
    return CounterWindow(end[0] - start[0], increase, unread)


def history(window_s: float) -> CounterHistory:
    return CounterHistory(window_s, min(window_s, MAX_SPAN_TO_SAMPLE_S))
