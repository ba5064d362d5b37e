"""``sequent report``: one run as a self-contained HTML page, from stores written by real runs.

The page is parsed with html.parser (no address to fetch, everything escaped, its sections there),
then opened in a real headless Chromium, whose screenshot and DOM are checked.  The Chromium
test is marked ``needs_chromium``: it skips with a ``[required]`` reason where the ``chromium``
package is not installed.
"""

from __future__ import annotations

import dataclasses
import html
import os
import re
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

import sequent as seq
from sequent.cli import main
from sequent.graph import COLOURS
from sequent.report import build_report
from sequent.runs import run_detail

S = seq.STEP_SUCCESS
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="[required] headless Chromium: install the chromium package (apt-get install chromium)")


def work(n: int = 0) -> int:
    return n


def flaky(marker: str) -> str:
    """Fails with a message full of HTML until ``marker`` exists."""
    if not os.path.exists(marker):
        raise ValueError("bad <input> & \"quotes\" </pre><script>alert(1)</script>")
    return "fixed"


def build(store: str, logdir: str, marker: str) -> seq.Sequent:
    """prep -> batch (repeated 3 times: load -> check, which fails until ``marker`` exists) -> publish."""
    flow = seq.Sequent(name="nightly", store=store,
                       config={"task_construct": "thread", "LOGGING": {"logdir": logdir, "console": False}})
    prep = flow.add_step("prep", func=work)
    batch = flow.add_step("batch", repeats=range(3), requires=((prep, S),))
    load = batch.add_step("load", func=work, kwargs={"n": 1})
    batch.add_step("check", func=flaky, kwargs={"marker": marker}, requires=((load, S),))
    flow.add_step("publish", func=work, requires=((batch, S),))
    return flow


def run_it(store: str, base: Path, *, recover: bool) -> str:
    """A run that fails in batch_check 1.1; recovered to success when ``recover``. Returns its run_id."""
    marker = str(base / "fixed")
    flow = build(store, str(base / "logs"), marker)
    assert flow.run() is False
    if recover:
        Path(marker).write_text("")
        assert flow.run(run_mode=seq.RUN_RECOVER) is True
    return flow.run_id


@pytest.fixture
def recovered(tmp_path) -> dict:
    store = str(tmp_path / "nightly.db")
    return {"store": store, "run_id": run_it(store, tmp_path, recover=True)}


@pytest.fixture
def failed(tmp_path) -> dict:
    store = str(tmp_path / "nightly.db")
    return {"store": store, "run_id": run_it(store, tmp_path, recover=False)}


def sequent(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def report(capsys, store: str, run_id: str, path: Path) -> str:
    status, out, err = sequent(capsys, "report", store, run_id, "-o", str(path))
    assert (status, out.strip(), err) == (0, str(path), "")
    return path.read_text(encoding="utf-8")


class Page(HTMLParser):
    """Every tag with its attributes, and the text under each section (by id)."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.sections: dict[str, list[str]] = {}
        self._section: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "section":
            self._section.append(attrs.get("id", ""))
            self.sections.setdefault(attrs.get("id", ""), [])

    def handle_endtag(self, tag):
        if tag == "section" and self._section:
            self._section.pop()

    def handle_data(self, data):
        if self._section:
            self.sections[self._section[-1]].append(data)

    def text(self, section: str) -> str:
        return " ".join(" ".join(self.sections.get(section, [])).split())

    def find(self, tag: str, **wanted: str) -> list[dict]:
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in wanted.items())]


# --------------------------------------------------------------------------------------------- the page

def test_the_report_is_one_page_that_fetches_nothing(recovered, tmp_path, capsys):
    page = Page(report(capsys, recovered["store"], recovered["run_id"], tmp_path / "report.html"))
    addresses = [a[k] for _, a in page.tags for k in ("src", "href", "xlink:href", "action", "data") if a.get(k)]
    assert not [a for a in addresses if re.match(r"\s*(https?:)?//", a)]
    assert not [t for t, a in page.tags if t in ("script", "link", "img", "iframe", "object", "embed")]
    assert [t for t, _ in page.tags if t == "style"] == ["style"] and len(page.find("svg", **{"class": "graph"})) == 1


def test_the_summary_gives_flow_run_outcome_attempts_counts_and_duration(recovered, tmp_path, capsys):
    page = Page(report(capsys, recovered["store"], recovered["run_id"], tmp_path / "report.html"))
    summary = page.text("summary")
    detail = run_detail(recovered["store"], recovered["run_id"])
    for expected in ("Flow nightly", f"Run {recovered['run_id']}", "Outcome success", "Attempts 2 (1 recovery)",
                     "Duration", f"Store {recovered['store']}"):
        assert expected in summary
    counts = detail.counts()
    assert f"success: {counts['success']}" in summary and f"skipped: {counts['skipped']}" in summary
    assert counts["skipped"] > 0 and "failure: 0" in summary and "not started: 0" in summary


def test_the_timeline_has_a_bar_per_task_of_each_attempt_coloured_by_status(recovered, tmp_path, capsys):
    text = report(capsys, recovered["store"], recovered["run_id"], tmp_path / "report.html")
    page = Page(text)
    assert "Attempt 1" in page.text("timeline") and "Attempt 2" in page.text("timeline")
    timelines = re.findall(r'<svg [^>]*class="timeline".*?</svg>', text, re.S)
    assert len(timelines) == 2
    first = re.findall(r'<g class="bar" data-state="(\w+)"><title>([^<]*)</title>', timelines[0])
    assert ("failure", "batch_check 1.1") in {(state, tip.split(":")[0]) for state, tip in first}
    assert re.search(rf'data-state="failure">.*?fill="{COLOURS["failure"]}"', timelines[0])
    tasks = run_detail(recovered["store"], recovered["run_id"]).tasks
    assert sum(len(re.findall(r'<g class="bar"', t)) for t in timelines) == len([t for t in tasks if t.started])


def test_the_failures_show_each_traceback_escaped_and_what_became_of_it(recovered, tmp_path, capsys):
    text = report(capsys, recovered["store"], recovered["run_id"], tmp_path / "report.html")
    page = Page(text)
    failures = page.text("failures")
    assert "batch_check 1.1 · attempt 1" in failures and "then success in attempt 2" in failures
    assert 'ValueError: bad <input> & "quotes" </pre><script>alert(1)</script>' in failures
    assert "in flaky" in failures and "batch 1 · attempt 1" in failures  # the container failed with it
    assert not page.find("input") and not [t for t, _ in page.tags if t == "script"]
    [pre] = [p for p in re.findall(r'<pre class="traceback">(.*?)</pre>', text, re.S) if "ValueError" in p]
    assert "&lt;script&gt;" in pre and f'File "{__file__}"' in html.unescape(pre)


def test_a_recovered_run_has_its_attempts_side_by_side(recovered, tmp_path, capsys):
    text = report(capsys, recovered["store"], recovered["run_id"], tmp_path / "report.html")
    page = Page(text)
    columns = page.find("div", **{"class": "attempt"})
    assert [c["data-recovery"] for c in columns] == ["0", "1"]
    attempts = page.text("attempts")
    assert re.search(r"Attempt 1 failure restart .*Attempt 2 success recover, compared with attempt 1", attempts)
    assert ".attempts { display: flex;" in text


def test_a_run_never_recovered_has_no_attempts_section_and_its_failed_steps_are_red(failed, tmp_path, capsys):
    text = report(capsys, failed["store"], failed["run_id"], tmp_path / "report.html")
    page = Page(text)
    assert "attempts" not in page.sections
    program = run_detail(failed["store"], failed["run_id"]).run.program
    assert f"sequent recover {program} {failed['run_id']} --store {failed['store']}" in page.text("summary")
    graph = re.search(r'<svg [^>]*class="graph".*?</svg>', text, re.S)[0]
    assert re.search(rf'data-step="batch_check"><title>batch_check: failure</title><rect [^>]*'
                     rf'fill="{COLOURS["failure"]}"', graph)
    assert re.search(r'data-step="publish"><title>publish: not started</title>', graph)
    assert "publish not started" in page.text("tasks")


def test_the_timeline_has_a_lane_per_host_when_tasks_ran_on_several(recovered):
    detail = run_detail(recovered["store"], recovered["run_id"])
    moved = [dataclasses.replace(t, host="east" if t.step.startswith("batch") else "west") for t in detail.tasks]
    text = build_report(dataclasses.replace(detail, tasks=moved))
    first = re.findall(r'<svg [^>]*class="timeline".*?</svg>', text, re.S)[0]
    lanes = re.findall(r'class="lane">host (\w+)</text>', first)
    assert lanes == ["east", "west"]
    east = first.split("host east")[1].split("host west")[0]
    assert "batch_load 1.1" in east and "prep 1" not in east and "prep 1" in first.split("host west")[1]


def test_report_of_no_such_run_exits_3_and_writes_nothing(recovered, tmp_path, capsys):
    out = tmp_path / "none.html"
    status, _, err = sequent(capsys, "report", recovered["store"], "no-such-run", "-o", str(out))
    assert status == 3 and "no-such-run" in err and not out.exists()
    assert sequent(capsys, "report", recovered["store"], "-o", str(out))[0] == 2
    assert sequent(capsys, "report", recovered["store"], recovered["run_id"], "--latest")[0] == 2


def test_report_latest_writes_the_newest_run_by_default_next_to_where_it_is_asked(recovered, tmp_path, capsys,
                                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, out, _ = sequent(capsys, "report", recovered["store"], "--latest")
    assert status == 0 and out.strip() == f"nightly-{recovered['run_id']}.html"
    assert recovered["run_id"] in (tmp_path / out.strip()).read_text(encoding="utf-8")


def test_report_of_a_run_in_postgresql(postgres_database, tmp_path, capsys):
    from sqlalchemy.engine import make_url

    run_id = run_it(postgres_database, tmp_path, recover=True)
    text = report(capsys, postgres_database, run_id, tmp_path / "pg.html")
    page = Page(text)
    assert f"Run {run_id}" in page.text("summary") and "Attempts 2" in page.text("summary")
    url = make_url(postgres_database)
    assert f"Store {url.render_as_string(hide_password=True)}" in page.text("summary")
    assert f":{url.password}@" not in text
    assert "ValueError: bad <input>" in page.text("failures") and len(page.find("div", **{"class": "attempt"})) == 2


# --------------------------------------------------------------------------------------------- Chromium

def png_pixels(data: bytes) -> tuple[int, int, set[tuple[int, int, int]]]:
    """A PNG's width, height and distinct RGB colours (8-bit RGB or RGBA, not interlaced)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    at, idat, header = 8, [], None
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        body = data[at + 8:at + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        at += 12 + length
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    previous = bytearray(stride)
    colours: set[tuple[int, int, int]] = set()
    for y in range(height):
        kind, row = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if kind == 1:
            for i in range(bpp, stride):
                row[i] = (row[i] + row[i - bpp]) & 0xFF
        elif kind == 2:
            row = bytearray((a + b) & 0xFF for a, b in zip(row, previous))
        elif kind == 3:
            for i in range(stride):
                row[i] = (row[i] + ((row[i - bpp] if i >= bpp else 0) + previous[i]) // 2) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = row[i - bpp] if i >= bpp else 0
                b, c = previous[i], previous[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                row[i] = (row[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        colours.update(zip(row[0::bpp], row[1::bpp], row[2::bpp]))
        previous = row
    return width, height, colours


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, timeout=90, cwd=tmp_path)


@needs_chromium
@pytest.mark.timeout_seconds(240)
def test_chromium_shows_the_summary_the_timeline_and_the_failure(recovered, tmp_path, capsys):
    page = tmp_path / "report.html"
    report(capsys, recovered["store"], recovered["run_id"], page)
    shot = tmp_path / "out.png"
    made = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,2000", page.as_uri())
    assert made.returncode == 0 and shot.exists(), made.stderr.decode(errors="replace")[-2000:]
    width, height, colours = png_pixels(shot.read_bytes())
    assert (width, height) == (1200, 2000)
    assert len(colours) > 50  # text, badges, bars and boxes: far from a blank page
    failure = tuple(int(COLOURS["failure"][i:i + 2], 16) for i in (1, 3, 5))
    success = tuple(int(COLOURS["success"][i:i + 2], 16) for i in (1, 3, 5))
    assert failure in colours and success in colours
    dumped = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dumped.returncode == 0
    dom = Page(dumped.stdout.decode("utf-8"))
    assert {"summary", "graph", "timeline", "failures", "attempts"} <= set(dom.sections)
    assert f"Run {recovered['run_id']}" in dom.text("summary")
    assert len(dom.find("svg", **{"class": "timeline"})) == 2
    assert "ValueError: bad <input>" in dom.text("failures") and not dom.find("input")
