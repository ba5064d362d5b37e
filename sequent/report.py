"""A run's report as one self-contained HTML page: summary, graph, timeline, failures, attempts.

:func:`build_report` turns a :class:`~sequent.runs.RunDetail` into HTML that needs nothing but
itself to open: inline CSS, the graph and the timelines as inline SVG drawn here, no script, no
font, no address to fetch.  Everything read from the store is escaped.  Large runs are cut to
readable sizes (the limits below) and the page says what it left out.
"""

from __future__ import annotations

import datetime
import html
import math
import shlex
from collections.abc import Iterable
from typing import Any, Optional

from ._version import __version__
from .eventor.history import STATES, error_line, state_of
from .graph import COLOURS, INKS, clean_text, drawable, step_statuses, to_svg, with_not_started

MAX_GRAPH_NODES = 1500  # above this the graph is left to `sequent graph`
MAX_TIMELINE_ROWS = 800  # per attempt
MAX_TABLE_ROWS = 2000  # the tasks table, and each attempt's column

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px; color: #222;
       background: #fff; line-height: 1.4; }
h1 { font-size: 1.5em; margin: 0 0 12px; } h2 { font-size: 1.2em; margin: 28px 0 8px;
       border-bottom: 1px solid #ddd; padding-bottom: 4px; } h3 { font-size: 1em; margin: 16px 0 6px; }
table { border-collapse: collapse; } td, th { padding: 3px 10px 3px 0; text-align: left; vertical-align: top; }
table.tasks td, table.tasks th { border-bottom: 1px solid #eee; padding: 2px 12px 2px 4px; font-size: 0.9em; }
.summary th { color: #555; font-weight: normal; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 0.9em; border: 1px solid #999; }
.counts .badge { margin: 0 6px 4px 0; }
.scroll { overflow-x: auto; max-width: 100%; }
pre { background: #f6f6f6; border: 1px solid #ddd; padding: 8px; overflow-x: auto; white-space: pre-wrap;
      word-break: break-all; font-size: 0.85em; }
.failure { border-left: 4px solid #e53935; padding-left: 10px; margin-bottom: 16px; }
.failure .line { font-weight: bold; }
.attempts { display: flex; gap: 16px; overflow-x: auto; align-items: flex-start; }
.attempt { flex: 1 1 0; min-width: 300px; border: 1px solid #ddd; border-radius: 6px; padding: 8px; }
.note { color: #666; font-size: 0.9em; }
code { background: #f2f2f2; padding: 1px 4px; }
"""


def esc(text: Any) -> str:
    """Text from the store, safe in HTML content and attribute values."""
    return html.escape(clean_text(text), quote=True)


def when(moment: Optional[datetime.datetime]) -> str:
    """A stored moment in UTC, to the second; '' for none."""
    if moment is None:
        return ""
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def seconds(value: Optional[float]) -> str:
    """A duration as people read it: 35 ms, 2.35 s, 12.4 s, 3 min 5 s, 2 h 10 min."""
    if value is None:
        return ""
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 10:
        return f"{value:.2f} s"
    if value < 60:
        return f"{value:.1f} s"
    if value < 3600:
        return f"{int(value // 60)} min {int(value % 60)} s"
    return f"{int(value // 3600)} h {int(value % 3600 // 60)} min"


def badge(state: str, text: Optional[str] = None) -> str:
    """A label in the colours of ``state`` (one of the graph's outcomes), showing ``text`` or the state."""
    fill = COLOURS.get(state, "#ffffff")
    ink = INKS.get(state, "#000000")
    shown = esc(text if text is not None else state)
    return f'<span class="badge" style="background:{fill};color:{ink}">{shown}</span>'


def build_report(detail: Any, *, store: str = "", config: Optional[str] = None) -> str:
    """The HTML page for ``detail`` (a :class:`~sequent.runs.RunDetail`); ``store`` names where it was read
    (shown as given: mask a URL's password first), ``config`` the configuration file it was read with."""
    run = detail.run
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{esc(run.flow)} {esc(run.run_id)}: {esc(run.outcome)}</title>",
             f"<style>{_CSS}</style></head><body>",
             f"<h1>Run {esc(run.run_id)} of {esc(run.flow)}: {badge(_outcome_state(run.outcome), run.outcome)}</h1>",
             _summary(detail, store, config), _graph(detail), _timelines(detail), _failures(detail)]
    if len(detail.attempts) > 1:
        parts.append(_attempts(detail))
    parts.append(_tasks(detail))
    parts.append(f'<p class="note">Written by sequent {esc(__version__)} on '
                 f"{esc(when(datetime.datetime.now(datetime.timezone.utc)))}.</p></body></html>")
    return "\n".join(parts) + "\n"


def _outcome_state(outcome: Optional[str]) -> str:
    """The colour a run's or attempt's outcome is shown in."""
    return {"success": "success", "running": "active", None: "not started"}.get(outcome, "failure")


# ----------------------------------------------------------------------------------------- summary

def _summary(detail: Any, store: str, config: Optional[str]) -> str:
    run = detail.run
    attempts = len(detail.attempts)
    recovered = f" ({attempts - 1} {'recovery' if attempts == 2 else 'recoveries'})" if attempts > 1 else ""
    rows = [("Flow", esc(run.flow)), ("Run", esc(run.run_id)),
            ("Outcome", badge(_outcome_state(run.outcome), run.outcome)),
            ("Attempts", f"{attempts}{recovered}"), ("Started", esc(when(run.started))),
            ("Ended", esc(when(run.ended)) or "not ended"), ("Duration", esc(seconds(detail.duration))),
            ("Host", esc(run.host or "")), ("Program", esc(run.program or "")), ("Store", esc(store))]
    table = "".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in rows)
    counts = detail.counts()
    chips = "".join(badge(state, f"{state}: {counts.get(state, 0)}") for state in STATES)
    extra = "".join(badge("not started", f"{state}: {n}") for state, n in counts.items() if state not in STATES)
    hint = ""
    if getattr(detail, "recoverable", False):
        program = run.program
        if program and not (program.startswith("<") and program.endswith(">")):
            words = (["sequent", "recover", program, run.run_id] + (["--store", store] if store else [])
                     + (["--config", config] if config else []))
            hint = (f'<p>Recover it with <code>{esc(" ".join(shlex.quote(w) for w in words))}</code> '
                    f"(add <code>--dry-run</code> to see first what will run again).</p>")
        else:
            hint = (f"<p>Recover it with <code>flow.run(run_mode=seq.RUN_RECOVER, run_id={esc(repr(run.run_id))})"
                    f"</code>.</p>")
    return (f'<section id="summary"><h2>Summary</h2><table class="summary">{table}</table>'
            f'<p class="counts">{chips}{extra}</p>{hint}</section>')


# ----------------------------------------------------------------------------------------- graph

def _graph(detail: Any) -> str:
    graph, why = drawable(detail.graph, detail.shape, detail.run.flow)
    note = f'<p class="note">{esc(why[0].upper() + why[1:])}.</p>' if why else ""
    if graph.get("problem"):
        note += f'<p class="note">{esc(graph["problem"])}</p>'
    statuses = with_not_started(graph, step_statuses(detail.tasks))
    count = len(graph.get("nodes") or {})
    legend = "".join(badge(state) + " " for state in STATES)
    if count > MAX_GRAPH_NODES:
        body = (f'<p class="note">The flow has {count} steps, too many to draw here; '
                f"<code>sequent graph STORE {esc(detail.run.run_id)} --format dot</code> writes it for Graphviz.</p>")
    else:
        body = f'<div class="scroll">{to_svg(graph, statuses)}</div>'
    return f'<section id="graph"><h2>Graph</h2><p>{legend}</p>{note}{body}</section>'


# ----------------------------------------------------------------------------------------- timeline

_LABEL_CHARS, _ROW, _BAR, _CHART = 40, 18, 12, 760.0


def _timelines(detail: Any) -> str:
    """One timeline per attempt: a row per task that started, in lanes per host when several ran it."""
    by_attempt: dict[int, list[Any]] = {}
    for task in detail.tasks:
        by_attempt.setdefault(task.recovery, []).append(task)
    blocks = []
    for attempt in detail.attempts or []:
        tasks = by_attempt.pop(attempt.recovery, [])
        blocks.append(_timeline(f"Attempt {attempt.recovery + 1}", attempt, tasks))
    for recovery, tasks in sorted(by_attempt.items()):  # tasks of an attempt the store has no row for
        blocks.append(_timeline(f"Attempt {recovery + 1}", None, tasks))
    return f'<section id="timeline"><h2>Timeline</h2>{"".join(blocks) or "<p>No tasks.</p>"}</section>'


def _timeline(title: str, attempt: Any, tasks: list[Any]) -> str:
    started = [t for t in tasks if t.started is not None]
    waiting = len(tasks) - len(started)
    head = f"<h3>{esc(title)}"
    if attempt is not None:
        ended = badge(_outcome_state(attempt.outcome), attempt.outcome or "no end")
        head += f" &middot; {esc(attempt.mode)} &middot; {ended}"
    head += "</h3>"
    if not started:
        return head + '<p class="note">No task of this attempt started.</p>'
    started.sort(key=lambda t: (t.started, t.step, t.sequence))
    shown = started[:MAX_TIMELINE_ROWS]
    t0 = min(t.started for t in shown).timestamp()
    ends = [t.ended.timestamp() for t in shown if t.ended is not None] + [t.started.timestamp() for t in shown]
    if attempt is not None and attempt.ended is not None:
        ends.append(attempt.ended.timestamp())
    t1 = max(ends)
    span = max(t1 - t0, 1e-3)
    hosts = sorted({t.host or "" for t in shown})
    lanes = [(host, [t for t in shown if (t.host or "") == host]) for host in hosts] if len(hosts) > 1 \
        else [(None, shown)]
    label_w = 7.0 * min(_LABEL_CHARS, max(len(_row_label(t)) for t in shown)) + 16
    width = label_w + _CHART + 30
    y = 30.0
    body: list[str] = []
    for host, lane in lanes:
        if host is not None:
            body.append(f'<text x="4" y="{y + 12:.0f}" font-weight="bold" class="lane">host {esc(host or "?")}</text>')
            y += _ROW
        for task in lane:
            x1 = label_w + (task.started.timestamp() - t0) / span * _CHART
            end = task.ended.timestamp() if task.ended is not None else t1
            x2 = label_w + (end - t0) / span * _CHART
            state = state_of(task)
            tip = (f"{task.step} {task.sequence}: {state}, started {when(task.started)}"
                   f"{', ' + seconds(task.duration) if task.ended is not None else ', no end recorded'}"
                   f"{', on ' + task.host if task.host else ''}")
            body.append(f'<g class="bar" data-state="{esc(state)}"><title>{esc(tip)}</title>'
                        f'<text x="4" y="{y + 12:.0f}">{esc(_row_label(task)[:_LABEL_CHARS])}</text>'
                        f'<rect x="{x1:.1f}" y="{y + 3:.1f}" width="{max(x2 - x1, 3):.1f}" height="{_BAR}" '
                        f'fill="{COLOURS.get(state, "#999999")}" stroke="#555" stroke-width="0.5"/></g>')
            y += _ROW
    axis = [f'<line x1="{label_w:.1f}" y1="24" x2="{label_w + _CHART:.1f}" y2="24" stroke="#999"/>']
    step = _tick(span)
    tick = 0.0
    while tick <= span + 1e-9:
        x = label_w + tick / span * _CHART
        axis.append(f'<line x1="{x:.1f}" y1="20" x2="{x:.1f}" y2="{y:.0f}" stroke="#eee"/>'
                    f'<text x="{x:.1f}" y="16" text-anchor="middle" font-size="10" fill="#555">'
                    f"{esc(_tick_text(tick, step))}</text>")
        tick += step
    height = math.ceil(y + 8)
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="{width:.0f}" height="{height}" '
           f'viewBox="0 0 {width:.0f} {height}" font-family="sans-serif" font-size="11">'
           + "".join(axis) + "".join(body) + "</svg>")
    notes = [f"from {esc(when(datetime.datetime.fromtimestamp(t0, datetime.timezone.utc)))}, "
             f"{esc(seconds(t1 - t0))} shown"]
    if len(started) > len(shown):
        notes.append(f"the first {len(shown)} of {len(started)} tasks")
    if waiting:
        notes.append(f"{waiting} task{'s' if waiting != 1 else ''} that never started not shown")
    return head + f'<p class="note">{"; ".join(notes)}</p><div class="scroll">{svg}</div>'


def _row_label(task: Any) -> str:
    return f"{task.step} {task.sequence}"


def _tick(span: float) -> float:
    """A round step between axis ticks, giving 4 to 10 of them over ``span`` seconds."""
    raw = span / 6
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= factor * power:
            return factor * power
    return 10 * power


def _tick_text(value: float, step: float) -> str:
    if step >= 60 and value:
        return f"+{value / 60:g} min"
    digits = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return f"+{value:.{digits}f} s"


# ----------------------------------------------------------------------------------------- failures

def _failures(detail: Any) -> str:
    """Every failed task of every attempt with its error, saying whether a later attempt made it good."""
    failed = [t for t in detail.tasks if t.status == "failure"]
    if not failed:
        return '<section id="failures"><h2>Failures</h2><p>No task failed.</p></section>'
    newest = {(t.step, t.sequence): t for t in detail.latest()}
    items = []
    for task in failed:
        now = newest.get((task.step, task.sequence))
        later = ""
        if now is not None and now.recovery > task.recovery:
            later = f" &middot; then {badge(state_of(now))} in attempt {now.recovery + 1}"
        line = error_line(task.error)
        items.append(f'<div class="failure" data-step="{esc(task.step)}"><h3>{esc(task.step)} {esc(task.sequence)} '
                     f"&middot; attempt {task.recovery + 1}{' &middot; on ' + esc(task.host) if task.host else ''}"
                     f"{' &middot; ended ' + esc(when(task.ended)) if task.ended else ''}{later}</h3>"
                     f'<p class="line">{esc(line or "no error recorded")}</p>'
                     + (f'<pre class="traceback">{esc(task.error)}</pre>' if task.error else "") + "</div>")
    return f'<section id="failures"><h2>Failures</h2>{"".join(items)}</section>'


# ----------------------------------------------------------------------------------------- attempts

def _attempts(detail: Any) -> str:
    """The attempts side by side: each one's outcome, counts and tasks."""
    by_attempt: dict[int, list[Any]] = {}
    for task in detail.tasks:
        by_attempt.setdefault(task.recovery, []).append(task)
    columns = []
    for attempt in detail.attempts:
        tasks = by_attempt.get(attempt.recovery, [])
        counts: dict[str, int] = {}
        for task in tasks:
            counts[state_of(task)] = counts.get(state_of(task), 0) + 1
        based = f", compared with attempt {attempt.based_on + 1}" if attempt.based_on is not None else ""
        head = (f"<h3>Attempt {attempt.recovery + 1} "
                f"{badge(_outcome_state(attempt.outcome), attempt.outcome or 'no end')}</h3>"
                f'<p class="note">{esc(attempt.mode)}{esc(based)}<br>{esc(when(attempt.started))}'
                f"<br>{esc(seconds(attempt.duration)) or 'no end recorded'}"
                f"{' on ' + esc(attempt.host) if attempt.host else ''}</p>"
                f"<p>{''.join(badge(s, f'{s}: {counts[s]}') for s in STATES if counts.get(s))}</p>")
        columns.append(f'<div class="attempt" data-recovery="{attempt.recovery}">{head}'
                       f"{_task_table(tasks, attempt_column=False, compact=True)}</div>")
    return f'<section id="attempts"><h2>Attempts</h2><div class="attempts">{"".join(columns)}</div></section>'


# ----------------------------------------------------------------------------------------- tasks

def _tasks(detail: Any) -> str:
    """Where every step and iteration stands now, the steps that never started included."""
    rows = list(detail.latest())
    table = _task_table(rows, attempt_column=len(detail.attempts) > 1, not_started=detail.not_started())
    return f'<section id="tasks"><h2>Tasks</h2>{table}</section>'


def _task_table(tasks: Iterable[Any], *, attempt_column: bool, not_started: Iterable[str] = (),
                compact: bool = False) -> str:
    """A table of tasks (then the steps that never started); ``compact``: step, sequence, status, duration."""
    tasks, not_started = list(tasks), list(not_started)
    heads = ["Step", "Sequence", "Status"] + (["Attempt"] if attempt_column else []) \
        + (["Duration"] if compact else ["Host", "Started", "Duration", "Error"])
    rows = []
    for task in tasks[:MAX_TABLE_ROWS]:
        cells = [esc(task.step), esc(task.sequence), badge(state_of(task))]
        if attempt_column:
            cells.append(str(task.recovery + 1))
        if compact:
            cells.append(esc(seconds(task.duration)))
        else:
            cells += [esc(task.host or ""), esc(when(task.started)), esc(seconds(task.duration)),
                      esc(error_line(task.error))]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    for step in not_started[:max(MAX_TABLE_ROWS - len(rows), 0)]:
        cells = [esc(step), "", badge("not started")] + [""] * (len(heads) - 3)
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    more = len(tasks) + len(not_started) - len(rows)
    note = f'<p class="note">{more} more rows not shown.</p>' if more > 0 else ""
    head = "<tr>" + "".join(f"<th>{h}</th>" for h in heads) + "</tr>"
    return f'<div class="scroll"><table class="tasks">{head}{"".join(rows)}</table></div>{note}'
