"""report.html in a real browser: headless Chromium lays it out, we read back its DOM and a
screenshot. The DOM must hold, for each chart series, as many drawn points as result.json
has values for it; the screenshot must show each series in its colour (a chart that
renders blank or off-page fails)."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import zlib
from collections import Counter
from pathlib import Path

import pytest

from harness.report.html import COLOR
from harness.report.outputs import write_outputs
from tests.helpers import series_in_dom

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "result_sample.json"
WIDTH, HEIGHT = 1280, 3200
"""Tall enough to hold the three time charts and the reconnect and restore bar charts."""


def chromium_binary() -> str | None:
    found = shutil.which("chromium")
    if found:
        return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


CHROMIUM = chromium_binary()
pytestmark = [
    pytest.mark.shares_machine,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="no chromium on PATH nor /usr/bin/chromium: `make chromium` (as root) or `sudo apt-get install chromium`",
    ),
]


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Headless, offline (every host name resolves to nothing), with its own profile."""
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--disable-background-networking",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--user-data-dir={tmp_path / 'profile'}",
            *args,
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )


def png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB bytes) of an 8-bit, non-interlaced RGB or RGBA PNG.

    Pillow is not a dependency of the project: the five PNG row filters are short enough.
    """
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, bytearray()
    width = height = color_type = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color_type, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and color_type in (2, 6) and interlace == 0
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    bpp = 4 if color_type == 6 else 3
    raw = zlib.decompress(bytes(idat))
    stride = width * bpp
    previous = bytearray(stride)
    rows = []
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, previous, strict=True))
        elif kind == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + previous[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = previous[i], previous[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        previous = line
        rgb = line if bpp == 3 else bytes(v for i, v in enumerate(line) if i % 4 != 3)
        rows.append(bytes(rgb))
    return width, height, rows


def rgb(hex_color: str) -> tuple[int, int, int]:
    value = int(hex_color.lstrip("#"), 16)
    return value >> 16, (value >> 8) & 0xFF, value & 0xFF


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    tmp_path = tmp_path_factory.mktemp("report")
    result = json.loads(SAMPLE.read_text())
    write_outputs(tmp_path, result)
    return result, tmp_path


def test_every_series_draws_one_point_per_value(rendered: tuple[dict, Path]) -> None:
    result, tmp_path = rendered
    dom = chromium(tmp_path, "--dump-dom", (tmp_path / "report.html").as_uri()).stdout.decode()
    drawn = series_in_dom(dom)
    timeline = result["timeline"]
    for name in ("requests_per_s", "errors_per_s", "tools_list_p50_ms", "tools_list_p99_ms"):
        values = sum(1 for row in timeline if row.get(name) is not None)
        assert drawn[name] == (values, values), name
    assert drawn["tools_list_p99_ms"][1] < len(timeline)  # seconds without tools/list: no point
    percentiles = result["metrics"]["reconnect"]["time_to_reconnect_s"]
    assert drawn["reconnect_time_s"][1] == sum(1 for v in percentiles.values() if v is not None)
    assert drawn["restore_steps"][1] == len(result["metrics"]["restore"]["steps"])


def test_screenshot_shows_every_chart(rendered: tuple[dict, Path]) -> None:
    _, tmp_path = rendered
    shot = tmp_path / "report.png"
    chromium(
        tmp_path,
        f"--screenshot={shot}",
        f"--window-size={WIDTH},{HEIGHT}",
        (tmp_path / "report.html").as_uri(),
    )
    width, height, rows = png_pixels(shot)
    assert (width, height) == (WIDTH, HEIGHT)
    pixels: Counter[tuple[int, int, int]] = Counter()
    for row in rows:
        for i in range(0, len(row), 3):
            pixels[(row[i], row[i + 1], row[i + 2])] += 1
    total = width * height
    background = pixels[(255, 255, 255)] + pixels[rgb("#f6f8fa")]
    assert total - background > total // 10, "the page is mostly blank"
    assert len(pixels) > 500, "too few distinct colours for a page with charts"
    # Each series' own colour must cover a visible area (lines 2 px wide, points 5 px).
    for name in (
        "requests_per_s",
        "errors_per_s",
        "tools_list_p50_ms",
        "tools_list_p99_ms",
        "sessions_open",
    ):
        assert pixels[rgb(COLOR[name])] > 300, f"{name} is not visible in the screenshot"
    assert pixels[rgb(COLOR["bar"])] > 2000, "the bar charts are not visible"
    assert pixels[rgb("#cf222e")] > 5000, "the FAIL header is not visible"
