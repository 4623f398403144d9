"""report.html: readable without raw JSON, one pass table per stage, and it renders in a real browser.

The reports come from accelerating a tiny conv net (one batch_norm that fold_conv_bn must leave
alone, so there is a refusal with a source location) with each backend. The browser test loads
a saved artifact's report.html in headless Chromium; without Chromium it skips, unless
ACCELC_REQUIRE_BROWSER=1 (CI sets it), where it fails.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import signal
import struct
import subprocess
import zlib
from html.parser import HTMLParser

import pytest
import torch
from torch import nn

import accelc
from accelc.report import render_html

SECTION_HEADINGS = ["Summary", "Passes", "Graph stage", "Lowering stage", "ONNX stage", "Verification",
                    "Latency", "ONNX Runtime", "Fingerprint"]


class ResidualNet(nn.Module):
    """conv → bn → relu, plus a skip from the conv: the conv's two users stop fold_conv_bn."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        y = self.conv(x)
        y = torch.relu(self.bn(y)) + y
        return self.head(y.mean(dim=(2, 3)))


def _tiny():
    torch.manual_seed(0)
    model = ResidualNet().eval()
    model.bn.running_mean.normal_()
    model.bn.running_var.uniform_(0.5, 1.5)
    return model, (torch.randn(2, 3, 8, 8),)


def _accelerate(backend: str, measure: bool = False):
    model, inputs = _tiny()
    return accelc.accelerate(model, inputs, backend=backend, measure=measure)


@pytest.fixture(scope="module")
def torch_report():
    return _accelerate("torch").report


@pytest.fixture(scope="module")
def ort_report():
    return _accelerate("onnxruntime").report


def _latency(eager_ms: float, accelc_ms: float) -> dict:
    """A ``latency`` entry as ``measure=True`` records it (the report fixtures skip the timing)."""
    timing = lambda ms: {"median_ms": ms, "p90_ms": ms * 1.2, "min_ms": ms * 0.9, "max_ms": ms * 3,  # noqa: E731
                         "iterations": 100}
    return {"eager": timing(eager_ms), "accelc": timing(accelc_ms), "speedup": round(eager_ms / accelc_ms, 3)}


@pytest.fixture(scope="module")
def auto_artifact(tmp_path_factory):
    """A saved artifact (backend auto: both runtimes built and timed), as ``accelc optimize`` writes it."""
    out = tmp_path_factory.mktemp("report") / "tiny"
    _accelerate("auto", measure=True).save(str(out))
    return out


class _Page(HTMLParser):
    """The page's headings, and each pass table's rows as lists of cell texts keyed by column."""

    def __init__(self):
        super().__init__()
        self.headings, self.pass_tables, self._stack, self._text = [], [], [], None
        self._row, self._header = None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("h1", "h2", "h3", "h4", "td", "th"):
            self._text = []
        if tag == "table":
            self._stack.append("passes" in (attrs.get("class") or "").split())
            if self._stack[-1]:
                self.pass_tables.append([])
                self._header = None
        if tag == "tr" and self._stack and self._stack[-1]:
            self._row = []

    def handle_endtag(self, tag):
        in_passes = bool(self._stack and self._stack[-1])
        if tag in ("h1", "h2", "h3", "h4"):
            self.headings.append("".join(self._text).strip())
        elif tag in ("td", "th") and in_passes and self._row is not None:
            self._row.append("".join(self._text).strip())
        elif tag == "tr" and in_passes and self._row is not None:
            if self._header is None:
                self._header = self._row
            else:
                self.pass_tables[-1].append(dict(zip(self._header, self._row)))
            self._row = None
        elif tag == "table" and self._stack:
            self._stack.pop()

    def handle_data(self, data):
        if self._text is not None:
            self._text.append(data)


def _parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    return parser


def _assert_no_raw_json(page: str):
    assert '{"' not in page and '{&quot;' not in page and "[{" not in page, "raw JSON in the page"
    assert not re.search(r"""&#x27;\w+&#x27;:|'\w+': """, page), "a Python dict's repr in the page"


def _assert_why_never_empty(parsed: _Page):
    rows = [row for table in parsed.pass_tables for row in table]
    assert rows
    for row in rows:
        assert row["why"], f"empty why for {row}"


# -- unit tests on real reports --------------------------------------------------------------------------

def test_torch_backend_page_has_every_stage_and_no_raw_json(torch_report):
    page = render_html(torch_report)
    parsed = _parse(page)
    for heading in SECTION_HEADINGS[:6]:
        assert any(h.startswith(heading) for h in parsed.headings), heading
    assert len(parsed.pass_tables) == 2  # graph and lowering; the onnx stage was not built
    assert "not built" in page
    assert re.search(r"Lowering stage.*?<b>runs</b>", page, re.S)
    graph = {row["pass"]: row for row in parsed.pass_tables[0]}
    assert set(graph) == {r["name"] for r in torch_report["passes"]}
    assert "left alone" in graph["fold_conv_bn"]["why"] and "2 users" in graph["fold_conv_bn"]["why"]
    _assert_no_raw_json(page)
    _assert_why_never_empty(parsed)


def test_time_bars_are_scaled_to_the_slowest_pass(torch_report):
    page = render_html(torch_report)
    widths = [float(w) for w in re.findall(r"<span class='bar '><span style='width:([\d.]+)%'>", page)]
    assert len(widths) == len(torch_report["passes"]) + len(torch_report["runtime_lowering"])
    assert max(widths) == 100.0 and min(widths) >= 0.0


def test_refusals_grouped_per_pass_with_source_location(torch_report):
    page = render_html(torch_report)
    refusals = [r for r in torch_report["refusals"] if r["pass_name"] == "fold_conv_bn"]
    assert refusals and refusals[0]["location"]
    block = re.search(r"<details><summary><b>fold_conv_bn</b>.*?</details>", page, re.S)
    assert block, "no <details> block for fold_conv_bn's refusals"
    assert os.path.basename(__file__) in block.group(0)


def test_onnxruntime_backend_page_says_which_stage_runs(ort_report):
    assert ort_report["backend"] == "onnxruntime"
    page = render_html(ort_report)
    parsed = _parse(page)
    for heading in set(SECTION_HEADINGS) - {"Latency", "Fingerprint"}:  # not timed, not saved
        assert any(h.startswith(heading) for h in parsed.headings), heading
    # ONNX Runtime was named: the PyTorch runtime (and its lowering stage) is built only if it fails.
    assert "runtime_lowering" not in ort_report and len(parsed.pass_tables) == 2
    assert re.search(r"Lowering stage.*?not built</b>: ONNX Runtime was asked for: the PyTorch runtime is built only "
                     r"when that fails", page, re.S)
    assert re.search(r"ONNX stage.*?<b>runs</b>", page, re.S)
    assert "ONNX Runtime vs eager (the runtime that runs)" in page
    assert {row["pass"] for row in parsed.pass_tables[1]} == {r["name"] for r in ort_report["onnx"]["onnx_passes"]}
    _assert_no_raw_json(page)
    _assert_why_never_empty(parsed)


def test_partial_export_gets_one_table_per_region(ort_report):
    report = copy.deepcopy(ort_report)
    section = report["onnx"]
    report["backend"] = "onnxruntime (partial)"
    kept = [{"op": "custom.soft_clip.default", "node": "soft_clip", "location": "model.py:9"}]
    failed_export = dict(section, export={"attempts": [ValueError("a\nbogus line")]})
    report["onnx"] = {"partial": True, "verification": section["verification"], "seconds": 1.0,
                      "kept_in_pytorch": kept, "onnx_parts": {"fused_0": section, "fused_1": failed_export}}
    page = render_html(report)
    parsed = _parse(page)
    assert "region fused_0" in parsed.headings and "region fused_1" in parsed.headings
    assert len(parsed.pass_tables) == 3  # graph, two regions (ONNX Runtime was named: no lowering stage)
    assert "custom.soft_clip.default" in page and "ValueError: a" in page and "bogus line" not in page
    _assert_no_raw_json(page)
    _assert_why_never_empty(parsed)


def test_warnings_banner_lists_every_warning_and_fallback(torch_report):
    assert "class='banner'" not in render_html(dict(torch_report, warnings=[], fallback=None, backend_fallback=None,
                                                    latency=None))
    report = dict(torch_report, warnings=["first <warning>", "second warning"],
                  backend_fallback="ONNX Runtime unavailable (boom); using the PyTorch runtime")
    page = render_html(report)
    banner = re.search(r"<div class='banner'.*?</div>", page, re.S).group(0)
    assert "first &lt;warning&gt;" in banner and "second warning" in banner and "ONNX Runtime unavailable" in banner
    assert page.index("class='banner'") < page.index("<h2>Summary</h2>")


def test_backend_chart_lists_every_backend_choice_entry(auto_artifact):
    import json

    report = json.loads((auto_artifact / "report.json").read_text())
    choice = report["backend_choice"]
    page = (auto_artifact / "report.html").read_text()
    svg = re.search(r"<svg[^>]*aria-label=\"median latency per system\".*?</svg>", page, re.S).group(0)
    labels = re.findall(r'text-anchor="end">([^<]*)</text>', svg)
    assert labels[0] == "eager" and labels[1].startswith("accelc, saved:")
    assert [label.split(" (timed")[0] for label in labels[2:]] == [k for k in choice if k != "chosen"]
    assert svg.count("✓ kept") == 1
    assert re.search(rf"{re.escape(choice['chosen'])} \(timed by auto\).*?✓ kept", svg, re.S)


def test_a_saved_result_slower_than_an_option_is_flagged(torch_report):
    report = dict(torch_report, latency=_latency(2.0, 1.0), backend_choice={"torch": 0.98, "onnxruntime": 1.02,
                                                                          "chosen": "torch"})
    assert "⚠ slower" not in render_html(report)  # within the timing noise of the kept backend's own number
    report["backend_choice"] = {"torch": 1.0, "onnxruntime": 0.3, "chosen": "torch"}
    page = render_html(report)
    assert "⚠ slower" in page
    banner = re.search(r"<div class='banner'.*?</div>", page, re.S).group(0)
    assert "slower than" in banner and "onnxruntime" in banner


def test_precision_section_only_with_candidates(torch_report):
    assert "Precision candidates" not in render_html(torch_report)
    assert "Precision candidates" not in render_html(dict(torch_report, precision_candidates=[]))
    assert "Precision candidates" not in render_html(dict(torch_report, precision_candidates=["fp16"]))
    candidates = [
        {"precision": "fp32", "median_ms": 1.0, "max_abs_error": 1e-7, "max_rel_error": 1e-7, "chosen": False,
         "reason": None},
        {"precision": "bf16", "median_ms": 0.5, "max_abs_error": 2e-2, "max_rel_error": 1e-2, "chosen": True,
         "reason": "fastest within tolerance"},
        {"precision": "int8", "median_ms": 0.4, "max_abs_error": 0.3, "max_rel_error": 0.2, "chosen": False,
         "reason": "error 0.3 over tolerance <0.05>"},
    ]
    page = render_html(dict(torch_report, precision_candidates=candidates))
    section = page[page.index("<h2>Precision candidates</h2>"):]
    section = section[:section.index("<h2>", 5)] if "<h2>" in section[5:] else section
    for c in candidates:
        assert f"<td>{c['precision']}</td>" in section
    assert section.count("✓ kept") == 1 and re.search(r"<tr class='kept'><td>bf16</td>", section)
    assert "over tolerance &lt;0.05&gt;" in section and "0.3" in section
    assert section.count("class='bar ") == 2 * len(candidates)  # a latency and an error bar each
    _assert_no_raw_json(page)


def test_onnx_section_and_fingerprint_are_key_value_tables(ort_report):
    report = copy.deepcopy(ort_report)
    report["onnx"]["export"]["attempts"] = ["dynamo: RuntimeError: first line\n  Traceback line", RuntimeError("x\ny")]
    report["fingerprint"] = {"accelc": "0.1.0", "torch": "2.x <cpu>", "cuda_device": None}
    page = render_html(report)
    onnx = page[page.index("<h2>ONNX Runtime</h2>"):page.index("<h2>Fingerprint</h2>")]
    assert "<table class='kv'>" in onnx and "CPUExecutionProvider" in onnx
    assert "Traceback" not in onnx and "RuntimeError: x" in onnx
    fingerprint = page[page.index("<h2>Fingerprint</h2>"):]
    assert "<th>torch</th><td>2.x &lt;cpu&gt;</td>" in fingerprint and "<th>cuda device</th>" in fingerprint
    _assert_no_raw_json(page)


def test_everything_is_escaped(torch_report):
    report = copy.deepcopy(torch_report)
    report["model"] = "<script>alert(1)</script>.py"
    report["passes"][0]["reason"] = "<b>bold</b>"
    report["refusals"] = [dict(r, node="<img src=x>") for r in report["refusals"]]
    page = render_html(report)
    assert "<script>" not in page and "<img" not in page and "<b>bold</b>" not in page
    assert "&lt;script&gt;" in page


# -- a real browser --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser() -> str:
    """Headless Chromium's path; without one, skip (or fail, with ACCELC_REQUIRE_BROWSER=1)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("ACCELC_REQUIRE_BROWSER") == "1":
        pytest.fail("ACCELC_REQUIRE_BROWSER=1 but no chromium, chromium-browser or google-chrome is on PATH; "
                    "install one (Debian: apt-get install chromium)")
    pytest.skip("no chromium, chromium-browser or google-chrome on PATH")


def _run_browser(browser: str, profile, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    """Run headless Chromium in its own process group, killed whole if it outlives ``timeout``."""
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
               f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"headless Chromium did not finish in {timeout} s: {' '.join(command)}")
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def _console_errors(stderr: str) -> list[str]:
    """Chromium's log lines for page console messages ("...:CONSOLE:1] ..." or "CONSOLE(1)") and uncaught errors."""
    return [line for line in stderr.splitlines() if re.search(r"Uncaught|CONSOLE[(:]\d", line)]


def _png_pixels(path, rows: int) -> tuple[int, int, list[tuple[int, int, int]]]:
    """(width, height, the RGB pixels of the first ``rows`` scanlines) of an 8-bit RGB/RGBA PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        chunk = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, f"unexpected PNG format {header}"
    bpp = 3 if colour == 2 else 4
    stride = width * bpp
    raw = zlib.decompressobj().decompress(idat, (stride + 1) * rows)
    lines, prev = [], bytearray(stride)
    for r in range(min(rows, len(raw) // (stride + 1))):
        kind, line = raw[r * (stride + 1)], bytearray(raw[r * (stride + 1) + 1:(r + 1) * (stride + 1)])
        for i in range(stride) if kind else ():
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            else:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        lines.append(bytes(line))
        prev = line
    return width, height, [tuple(line[i:i + 3]) for line in lines for i in range(0, stride, bpp)]


def test_report_renders_in_headless_chromium(browser, auto_artifact, tmp_path):
    page = auto_artifact / "report.html"
    url = page.resolve().as_uri()
    png = tmp_path / "report.png"

    shot = _run_browser(browser, tmp_path / "profile-shot", f"--screenshot={png}", "--window-size=1280,2400", url)
    assert png.is_file() and png.stat().st_size > 20_000, \
        f"no screenshot (exit {shot.returncode}): {shot.stderr[-2000:]}"
    width, height, pixels = _png_pixels(png, rows=600)
    assert (width, height) == (1280, 2400)
    colours = set(pixels)
    ink = sum(1 for p in pixels if sum(p) < 3 * 110) / len(pixels)
    assert len(colours) > 8 and 0.002 < ink < 0.5, f"the screenshot looks blank ({len(colours)} colours, ink {ink:.4f})"

    dom = _run_browser(browser, tmp_path / "profile-dom", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    headings = [re.sub(r"<[^>]+>", "", h).strip() for h in re.findall(r"<h[1-4][^>]*>(.*?)</h[1-4]>", dom.stdout, re.S)]
    for heading in SECTION_HEADINGS:
        assert any(h.startswith(heading) for h in headings), f"{heading!r} not among {headings}"
    assert "<svg" in dom.stdout and "class=\"passes\"" in dom.stdout

    for run in (shot, dom):
        assert not _console_errors(run.stderr), _console_errors(run.stderr)
    # The check above must see errors where there are some: a page whose script throws.
    control = tmp_path / "control.html"
    control.write_text("<!doctype html><html><body><script>throw new Error('control')</script></body></html>")
    logged = _run_browser(browser, tmp_path / "profile-control", "--dump-dom", control.resolve().as_uri()).stderr
    assert any("control" in line for line in _console_errors(logged)), \
        f"console errors are not detected: {logged[-2000:]}"
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page.read_text()), "the page loads an external asset"
