"""The flow's graph as plain JSON data, and its drawings: Mermaid, Graphviz DOT and SVG.

:func:`flow_graph` describes a flow's tree in the names the engine runs it under, so a run's
task rows (``sequent_tasks.step``) map onto its nodes; the engine stores it with each attempt
(``sequent_attempts.graph``), where ``sequent graph`` and ``sequent report`` read it back.
The format, version 1::

    {"version": 1,
     "flow": "etl",
     "nodes": {                         # every engine step, parents before their children
       "s1": {"name": "s1",             # what to show: the step's own name (a copy: "box@h1")
              "path": "s1",             # the step's flattened name in the flow's tree
              "parent": null,           # the engine name of its container; null at the top
              "kind": "container",      # or "step"
              "hosts": ["h1"],          # the hosts it may run on (its own or its container's)
              "copy": null,             # the host of the copy it belongs to (a container on several hosts)
              "repeats": "range(0, 3)", # a container's repeats, short; null for a step or the default (1,)
              "delay": 0.0,
              "requires": "g1"},        # the root group of its requires; null when it has none
       ...},
     "groups": {                        # the and/or groups of the requires
       "g1": {"op": "or",               # "and" or "or"
              "node": "s2",             # the engine step whose requires it belongs to
              "parent": null,           # the enclosing group; null for the root group
              "event": "flow.event1",   # the add_event it came from, when known; else null
              "label": null}},          # a text to show instead of op (the copies of a container)
     "edges": [                         # one per (step, status) of the requires
       {"from": "s1", "to": "s2", "label": "success", "group": "g1"}]}

An edge goes from the required step to the requiring one (``to``); ``group`` is the innermost
group that holds it.  A step's requires are one root group (a tuple of requires means ``and``):
groups of one item are dissolved into their parent, and a group inside one of the same op is
merged into it, unless it is a named event.  A requirement on a container copied to several
hosts becomes a group over its copies, labelled by how the copies combine.  A graph that could
not be described in full says why under ``"problem"`` (it never raises for a flow the API
accepts); one rebuilt from an old store's shape has no edges and ``"partial": true``.

The drawings show every group but a root ``and`` (its edges go straight to the step) as a small
junction node; with ``statuses`` (engine step name -> success, failure, active, ready, skipped
or not started) they colour each node by its outcome.
"""

from __future__ import annotations

import html
import json
import math
import re
import reprlib
from collections.abc import Iterable, Mapping
from typing import Any, Optional

from .eventor.history import state_of
from .tree import AllOf, AnyOf, Pair

GRAPH_VERSION = 1

#: What a node may show in a run, in the order a step's iterations combine (the first present wins).
OUTCOMES = ("failure", "active", "ready", "success", "skipped", "not started")

#: The fill of each outcome, shared by every drawing and the report.
COLOURS = {
    "success": "#81c784",
    "failure": "#e53935",
    "active": "#64b5f6",
    "ready": "#ffd54f",
    "skipped": "#b0bec5",
    "not started": "#f2f2f2",
}
#: The text colour on each outcome's fill.
INKS = {"failure": "#ffffff"}

_COPIES = {  # how the copies of a container combine, for each status required of it (see translate)
    "success": ("and", "all copies"),
    "complete": ("and", "all copies"),
    "failure": ("or", "all done, any failed"),
    "ready": ("or", "any copy"),
    "active": ("or", "any copy"),
}

class _ShortRepr(reprlib.Repr):
    """reprlib's short reprs, with the type's name for an object whose repr fails (not its address)."""

    def repr_instance(self, x: Any, level: int) -> str:
        try:
            text = repr(x)
        except Exception:
            return f"<{type(x).__name__}>"
        return text if len(text) <= self.maxother else text[:self.maxother - 3] + "..."


_repr = _ShortRepr()
_repr.maxstring = _repr.maxother = 40
_repr.maxlist = _repr.maxtuple = _repr.maxset = _repr.maxdict = 5


# ----------------------------------------------------------------------------------------- the data

def flow_graph(flow: Any) -> dict:
    """The flow's steps, containers and requires as JSON-able data (stored with each attempt)."""
    builder = _Builder(str(getattr(flow, "name", "") or ""))
    try:
        builder.container(flow, scope=None, rename=None, hosts=(), copy=None)
    except Exception as exc:  # never fail a run for its picture: keep what was described so far
        builder.problem = f"the graph is incomplete: {type(exc).__name__}: {exc}"
    return builder.data()


#: The most steps a flow may have for its graph to be kept with each attempt.  A larger one keeps
#: only a note (``{"omitted": steps}``): its graph would cost the run time and memory at its start
#: (some 10 us and 1 KB a step) and make a drawing nobody reads; ``sequent graph FLOW.py`` still
#: draws it from the flow file.
GRAPH_LIMIT = 5_000


def graph_text(flow: Any) -> str:
    """What the engine keeps of the flow's graph with each attempt: :func:`flow_graph` as compact JSON
    text, or, for a flow of more than GRAPH_LIMIT steps, a note that it was left out."""
    steps = len(getattr(flow, "_paths", ()))
    if steps > GRAPH_LIMIT:
        return json.dumps({"version": GRAPH_VERSION, "flow": str(getattr(flow, "name", "") or ""), "omitted": steps})
    return json.dumps(flow_graph(flow), separators=(",", ":"))


def drawable(graph: Optional[Mapping[str, Any]], shape: Iterable[Any], flow: str) -> tuple[dict, Optional[str]]:
    """The graph to draw of a stored run, and a note when it is not the whole one: from an old store,
    or of a flow too large to keep (its steps are drawn from its shape, without requires)."""
    if graph is not None and not graph.get("omitted"):
        return dict(graph), None
    if graph is None:
        why = "this run recorded no graph (a store written before graphs were kept)"
    else:
        why = (f"the run's flow has {graph['omitted']} steps, more than the {GRAPH_LIMIT} whose graph is kept "
               f"(draw it from its flow file: sequent graph FLOW.py)")
    return graph_from_shape(shape, flow), f"{why}: its steps are shown without their requires"


def graph_from_shape(shape: Iterable[Any], flow: str = "") -> dict:
    """A graph without requires from an attempt's shape (``[step, container, kind]`` each), for old stores."""
    nodes: dict[str, dict] = {}
    for row in shape:
        step, parent, kind = (list(row) + [None, None, None])[:3]
        step = str(step)
        nodes[step] = _node(step, step, None if parent is None else str(parent),
                            "container" if kind == "container" else "step", (), None, None, 0.0)
    return {"version": GRAPH_VERSION, "flow": flow, "nodes": nodes, "groups": {}, "edges": [], "partial": True}


def _node(name: str, path: str, parent: Optional[str], kind: str, hosts: Iterable[str], copy: Optional[str],
          repeats: Optional[str], delay: float) -> dict:
    return {"name": name, "path": path, "parent": parent, "kind": kind, "hosts": list(hosts), "copy": copy,
            "repeats": repeats, "delay": delay, "requires": None}


def _short(repeats: Any) -> Optional[str]:
    """A container's repeats as a short text; None for the default."""
    try:
        if isinstance(repeats, tuple) and repeats == (1,):
            return None
        if callable(repeats):
            return f"{getattr(repeats, '__qualname__', None) or type(repeats).__name__}()"
        if type(repeats).__repr__ is object.__repr__:  # would show an address: the type says enough
            return f"<{type(repeats).__name__}>"
        return _repr.repr(repeats)
    except Exception:
        return f"<{type(repeats).__name__}>"


class _Builder:
    """Walks the tree as the translator does (copies included) and collects nodes, groups and edges."""

    def __init__(self, flow: str):
        self.flow = flow
        self.nodes: dict[str, dict] = {}
        self.groups: dict[str, dict] = {}
        self.edges: list[dict] = []
        self.problem: Optional[str] = None

    def data(self) -> dict:
        data = {"version": GRAPH_VERSION, "flow": self.flow, "nodes": self.nodes, "groups": self.groups,
                "edges": self.edges}
        if self.problem:
            data["problem"] = self.problem
        return data

    def container(self, container: Any, scope: Optional[str], rename: Optional[tuple[str, str]],
                  hosts: tuple, copy: Optional[str]) -> None:
        children = list(getattr(container, "children", ()) or ())
        events = _events(container)
        base = {id(child): str(child.path) if rename is None else rename[1] + str(child.path)[len(rename[0]):]
                for child in children}
        names: dict[int, list[tuple[str, Optional[str]]]] = {}
        for child in children:
            own = tuple(str(h) for h in (getattr(child, "hosts", ()) or ()))
            if getattr(child, "children", None) and len(own) > 1:
                names[id(child)] = [(f"{base[id(child)]}@{h}", h) for h in own]
            else:
                names[id(child)] = [(base[id(child)], None)]
        for child in children:
            try:
                self.step(child, scope, names, base, events, hosts, copy)
            except Exception as exc:  # a step we cannot read: show it by name, and say why
                name = base.get(id(child)) or repr(child)
                self.nodes.setdefault(name, _node(name, name, scope, "step", (), copy, None, 0.0))
                self.problem = self.problem or f"step {name!r}: {type(exc).__name__}: {exc}"

    def step(self, child: Any, scope: Optional[str], names: dict, base: dict, events: dict,
             hosts: tuple, copy: Optional[str]) -> None:
        own = tuple(str(h) for h in (getattr(child, "hosts", ()) or ()))
        is_container = bool(getattr(child, "children", None))
        delay = float(getattr(child, "delay", 0) or 0)
        for name, host in names[id(child)]:
            if is_container:
                runs_on = (host,) if host else own[:1] or hosts
            else:
                runs_on = own or hosts
            label = name if host else str(child.name)
            node = _node(label, str(child.path), scope, "container" if is_container else "step", runs_on,
                         host or copy, _short(child.repeats) if is_container else None, delay)
            self.nodes[name] = node
            tree = _normal(child.requires, events)
            if tree is not None:
                if tree[0] == "pair":
                    tree = ("and", [tree], None)
                node["requires"] = self.group(tree, name, None, names)
            if is_container:
                self.container(child, scope=name, rename=None if name == child.path else (str(child.path), name),
                               hosts=runs_on, copy=host or copy)

    def group(self, tree: tuple, node: str, parent: Optional[str], names: dict) -> str:
        """Record the group ``tree`` (op, items, event) of ``node``'s requires; returns its id."""
        op, items, event = tree
        gid = f"g{len(self.groups) + 1}"
        self.groups[gid] = {"op": op, "node": node, "parent": parent, "event": event, "label": None}
        for item in items:
            if item[0] != "pair":
                self.group(item, node, gid, names)
                continue
            _, step, status = item
            copies = [name for name, _ in names.get(id(step), [(str(step.path), None)])]
            if len(copies) == 1:
                self.edges.append({"from": copies[0], "to": node, "label": status, "group": gid})
                continue
            how, label = _COPIES.get(status, ("and", "copies"))
            sub = f"g{len(self.groups) + 1}"
            self.groups[sub] = {"op": how, "node": node, "parent": gid, "event": None, "label": label}
            self.edges.extend({"from": c, "to": node, "label": status, "group": sub} for c in copies)
        return gid


def _events(container: Any) -> dict[int, str]:
    """The names of the container's events by the identity of their requires (when the tree keeps them)."""
    found = getattr(container, "events", None)
    if not isinstance(found, (list, tuple)):
        found = getattr(container, "_events", None)
    if not isinstance(found, (list, tuple)):
        return {}
    names: dict[int, str] = {}
    for event in found:
        requires = getattr(event, "requires", None)
        if requires is None:
            continue
        items = getattr(requires, "items", None)
        if type(requires) is AllOf and isinstance(items, tuple) and len(items) == 1 and not isinstance(items[0], Pair):
            requires = items[0]  # a group of one dissolves: the group inside it is the event's
        names[id(requires)] = str(event.name)
    return names


def _normal(requires: Any, events: dict[int, str]) -> Optional[tuple]:
    """A requires tree as ("pair", step, status) or (op, items, event): single items dissolved, like ops merged."""
    if requires is None:
        return None
    if isinstance(requires, Pair):
        return ("pair", requires.step, getattr(requires.status, "name", str(requires.status)))
    op = "or" if isinstance(requires, AnyOf) else "and"
    event = events.get(id(requires))
    items: list[tuple] = []
    for item in getattr(requires, "items", ()):
        normal = _normal(item, events)
        if normal is None:
            continue
        if normal[0] == op and normal[2] is None:
            items.extend(normal[1])
        else:
            items.append(normal)
    if not items:
        return None
    if len(items) == 1 and event is None:
        return items[0]
    return (op, items, event)


# ----------------------------------------------------------------------------------------- statuses

def step_statuses(tasks: Iterable[Any]) -> dict[str, str]:
    """Each step's outcome over its tasks (the newest row per step and sequence): see :data:`OUTCOMES`.

    A step is a failure when one of its iterations failed, else active, else ready; success when
    every iteration succeeded and one ran at least; skipped when a recovery skipped them all.
    """
    newest: dict[tuple[str, str], Any] = {}
    for task in tasks:
        key = (task.step, task.sequence)
        seen = newest.get(key)
        if seen is None or task.recovery >= seen.recovery:
            newest[key] = task
    found: dict[str, set[str]] = {}
    for task in newest.values():
        found.setdefault(task.step, set()).add(state_of(task))
    result = {}
    for step, statuses in found.items():
        result[step] = next((o for o in OUTCOMES if o in statuses), sorted(statuses)[0])
    return result


def with_not_started(graph: Mapping[str, Any], statuses: Mapping[str, str]) -> dict[str, str]:
    """``statuses`` with every node of ``graph`` that has none as ``not started``."""
    return {name: statuses.get(name, "not started") for name in graph.get("nodes", {})} | dict(statuses)


# ----------------------------------------------------------------------------------------- shared shape

class _Shape:
    """What every drawing needs: children per container, the junctions, and the links between them."""

    def __init__(self, graph: Mapping[str, Any]):
        self.nodes: dict[str, dict] = dict(graph.get("nodes") or {})
        self.children: dict[Optional[str], list[str]] = {}
        for name, node in self.nodes.items():
            parent = node.get("parent")
            self.children.setdefault(parent if parent in self.nodes else None, []).append(name)
        groups: dict[str, dict] = dict(graph.get("groups") or {})
        #: the groups drawn as junctions: (id, container it is drawn in, text)
        self.junctions: dict[str, tuple[Optional[str], str]] = {}
        for gid, group in groups.items():
            node = self.nodes.get(group.get("node"))
            if node is None:
                continue
            if group.get("parent") is None and group.get("op") == "and" and not group.get("event") \
                    and not group.get("label"):
                continue  # a root "and": its edges go straight to the step
            text = group.get("label") or group.get("op") or "and"
            if group.get("event"):
                text = f"{text} ({str(group['event']).rsplit('.', 1)[-1]})"
            parent = node.get("parent")
            self.junctions[gid] = (parent if parent in self.nodes else None, text)
        #: (from, to, label): each end a node's name or "#" + a junction's group id
        self.links: list[tuple[str, str, str]] = []
        for edge in graph.get("edges") or ():
            src, gid, label = edge.get("from"), edge.get("group"), str(edge.get("label") or "")
            if src not in self.nodes:
                continue
            dst = f"#{gid}" if gid in self.junctions else str(edge.get("to"))
            if dst in self.nodes or (dst.startswith("#") and dst[1:] in self.junctions):
                self.links.append((src, dst, label))
        for gid in self.junctions:
            group = groups[gid]
            parent = group.get("parent")
            self.links.append((f"#{gid}", f"#{parent}" if parent in self.junctions else group["node"], ""))

    def label(self, name: str) -> str:
        node = self.nodes[name]
        text = str(node.get("name") or name)
        if node.get("repeats"):
            text += f" ×{node['repeats']}"
        hosts = node.get("hosts") or ()
        if hosts and not node.get("copy"):
            text += f" on {', '.join(str(h) for h in hosts)}"
        return text


# ----------------------------------------------------------------------------------------- Mermaid

_MERMAID_SAFE = re.compile(r"[A-Za-z0-9 _.,:;()@/+=\-]")


def _mermaid_text(text: str) -> str:
    """Text for a quoted Mermaid label: anything but plain characters as an entity code (#NNN;)."""
    return "".join(ch if _MERMAID_SAFE.fullmatch(ch) else f"#{ord(ch)};" for ch in str(text))


def to_mermaid(graph: Mapping[str, Any], statuses: Optional[Mapping[str, str]] = None) -> str:
    """The graph as a Mermaid flowchart: containers as nested subgraphs, requires as labelled edges."""
    shape = _Shape(graph)
    ids = {name: f"n{i}" for i, name in enumerate(shape.nodes)}
    ids.update({f"#{gid}": f"j{i}" for i, gid in enumerate(shape.junctions)})
    junctions_in: dict[Optional[str], list[str]] = {}
    for gid, (where, _) in shape.junctions.items():
        junctions_in.setdefault(where, []).append(gid)
    lines = ["flowchart LR", f"  %% flow {_mermaid_text(graph.get('flow') or '')}"]

    def emit(container: Optional[str], depth: int) -> None:
        pad = "  " * depth
        for name in shape.children.get(container, ()):
            if name in shape.children:
                lines.append(f'{pad}subgraph {ids[name]}["{_mermaid_text(shape.label(name))}"]')
                emit(name, depth + 1)
                lines.append(f"{pad}end")
            else:
                lines.append(f'{pad}{ids[name]}["{_mermaid_text(shape.label(name))}"]')
        for gid in junctions_in.get(container, ()):
            text = shape.junctions[gid][1]
            shaped = f'(("{_mermaid_text(text)}"))' if text in ("and", "or") else f'(["{_mermaid_text(text)}"])'
            lines.append(f"{pad}{ids['#' + gid]}{shaped}")

    emit(None, 1)
    for src, dst, label in shape.links:
        arrow = f'-->|"{_mermaid_text(label)}"|' if label else "-->"
        lines.append(f"  {ids[src]} {arrow} {ids[dst]}")
    if graph.get("partial"):
        lines.append("  %% no requires: the store kept only the flow's steps")
    if statuses is not None:
        coloured = with_not_started(graph, statuses)
        by_outcome: dict[str, list[str]] = {}
        for name, outcome in coloured.items():
            if name in ids:
                by_outcome.setdefault(_outcome_key(outcome), []).append(ids[name])
        for outcome, members in by_outcome.items():
            klass = _class(outcome)
            lines.append(f"  classDef {klass} fill:{_fill(outcome)},color:{INKS.get(outcome, '#000000')},"
                         f"stroke:#555555")
            lines.append(f"  class {','.join(members)} {klass}")
    return "\n".join(lines) + "\n"


def _outcome_key(outcome: Any) -> str:
    outcome = str(outcome)
    return outcome if outcome in COLOURS else "not started"


def _class(outcome: str) -> str:
    return "st_" + re.sub(r"\W", "_", outcome)


def _fill(outcome: str) -> str:
    return COLOURS.get(outcome, COLOURS["not started"])


def _pale(colour: str) -> str:
    """``colour`` (#rrggbb) two thirds of the way to white: a container's fill behind its steps."""
    rgb = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{c + (255 - c) * 2 // 3:02x}" for c in rgb)


# ----------------------------------------------------------------------------------------- DOT

def _dot_text(text: Any) -> str:
    """A double-quoted DOT string (backslashes, quotes and line ends escaped)."""
    text = str(text).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text.replace("\r", "").replace("\n", "\\n") + '"'


def to_dot(graph: Mapping[str, Any], statuses: Optional[Mapping[str, str]] = None) -> str:
    """The graph in Graphviz DOT: containers as nested clusters, requires as labelled edges."""
    shape = _Shape(graph)
    ids = {name: f"n{i}" for i, name in enumerate(shape.nodes)}
    ids.update({f"#{gid}": f"j{i}" for i, gid in enumerate(shape.junctions)})
    coloured = with_not_started(graph, statuses) if statuses is not None else {}
    junctions_in: dict[Optional[str], list[str]] = {}
    for gid, (where, _) in shape.junctions.items():
        junctions_in.setdefault(where, []).append(gid)
    lines = ["digraph sequent {",
             f"  graph [rankdir=LR, compound=true, fontname=Helvetica, labelloc=t, "
             f"label={_dot_text('flow ' + str(graph.get('flow') or ''))}];",
             '  node [shape=box, style="rounded,filled", fillcolor="#ffffff", fontname=Helvetica];',
             "  edge [fontname=Helvetica, fontsize=10];"]

    def emit(container: Optional[str], depth: int) -> None:
        pad = "  " * depth
        for name in shape.children.get(container, ()):
            outcome = _outcome_key(coloured[name]) if name in coloured else None
            title = _dot_text(f"{name}: {outcome}" if outcome else name)
            if name in shape.children:
                fill = f', fillcolor="{_pale(_fill(outcome))}"' if outcome else ', fillcolor="#f7f7f7"'
                lines.append(f"{pad}subgraph cluster_{ids[name]} {{")
                lines.append(f'{pad}  graph [label={_dot_text(shape.label(name))}, style="rounded,filled"{fill}, '
                             f"tooltip={title}];")
                lines.append(f'{pad}  {ids[name]} [shape=point, style=invis, width=0, height=0, label=""];')
                emit(name, depth + 1)
                lines.append(f"{pad}}}")
            else:
                colour = (f', fillcolor="{_fill(outcome)}", fontcolor="{INKS.get(outcome, "#000000")}"'
                          if outcome else "")
                lines.append(f"{pad}{ids[name]} [label={_dot_text(shape.label(name))}, tooltip={title}{colour}];")
        for gid in junctions_in.get(container, ()):
            text = shape.junctions[gid][1]
            form = "circle" if text in ("and", "or") else "ellipse"
            lines.append(f'{pad}{ids["#" + gid]} [shape={form}, style=filled, fillcolor="#ffffff", fontsize=9, '
                         f"margin=0.02, label={_dot_text(text)}];")

    emit(None, 1)
    for src, dst, label in shape.links:
        attrs = [f"label={_dot_text(label)}"] if label else []
        if src in shape.children:
            attrs.append(f"ltail=cluster_{ids[src]}")
        if dst in shape.children:
            attrs.append(f"lhead=cluster_{ids[dst]}")
        lines.append(f"  {ids[src]} -> {ids[dst]}" + (f" [{', '.join(attrs)}]" if attrs else "") + ";")
    lines.append("}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------- SVG

_CHAR_W, _NODE_H, _JUNCTION, _PAD, _HEAD, _GAP_X, _GAP_Y = 7.0, 28.0, 24.0, 10.0, 22.0, 56.0, 12.0


def _xml(text: Any) -> str:
    """Text for SVG or HTML: escaped, characters XML cannot hold replaced."""
    return html.escape(clean_text(text), quote=True)


def clean_text(text: Any) -> str:
    """``text`` as a string a UTF-8 page can hold: no control characters but tab and line ends, no lone surrogates."""
    text = str(text).encode("utf-8", "replace").decode("utf-8")
    return re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", "\ufffd", text)


def to_svg(graph: Mapping[str, Any], statuses: Optional[Mapping[str, str]] = None) -> str:
    """The graph as an inline SVG: a layered drawing of each container's requires, containers as boxes."""
    shape = _Shape(graph)
    coloured = with_not_started(graph, statuses) if statuses is not None else {}
    size: dict[str, tuple[float, float]] = {}
    inner: dict[Optional[str], tuple[list[list[str]], float, float]] = {}  # per container: layers, width, height

    def measure(name: str) -> tuple[float, float]:
        if name.startswith("#"):
            text = shape.junctions[name[1:]][1]
            return (_JUNCTION, _JUNCTION) if text in ("and", "or") else (6.0 * len(text) + 14, _JUNCTION)
        if name in shape.children:
            layers, w, h = inner[name]
            return (max(w + 2 * _PAD, _CHAR_W * len(shape.label(name)) + 2 * _PAD), h + _HEAD + _PAD)
        return (_CHAR_W * len(shape.label(name)) + 20, _NODE_H)

    links_in: dict[Optional[str], list[tuple[str, str]]] = {}
    for src, dst, _ in shape.links:
        links_in.setdefault(_where(shape, src), []).append((src, dst))
    order = _containers_bottom_up(shape)
    for container in order:
        members = list(shape.children.get(container, ()))
        members += [f"#{gid}" for gid, (where, _) in shape.junctions.items() if where == container]
        for member in members:
            size[member] = measure(member)
        layers = _layers(members, links_in.get(container, []))
        width = sum(max(size[m][0] for m in layer) for layer in layers) + _GAP_X * max(len(layers) - 1, 0)
        height = max((sum(size[m][1] for m in layer) + _GAP_Y * (len(layer) - 1) for layer in layers), default=0)
        inner[container] = (layers, width, height)
    pos: dict[str, tuple[float, float]] = {}

    def place(container: Optional[str], x0: float, y0: float) -> None:
        layers, _, height = inner[container]
        x = x0
        for layer in layers:
            column = max(size[m][0] for m in layer)
            used = sum(size[m][1] for m in layer) + _GAP_Y * (len(layer) - 1)
            y = y0 + (height - used) / 2
            for member in layer:
                w, h = size[member]
                pos[member] = (x + (column - w) / 2, y)
                if member in shape.children:
                    place(member, pos[member][0] + _PAD, y + _HEAD)
                y += h + _GAP_Y
            x += column + _GAP_X

    margin = 12.0
    place(None, margin, margin + 18)
    _, total_w, total_h = inner[None]
    width, height = math.ceil(total_w + 2 * margin), math.ceil(total_h + 2 * margin + 18)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="graph" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>',
           f'<text x="{margin}" y="{margin + 8}" font-weight="bold">{_xml("flow " + str(graph.get("flow") or ""))}'
           f"</text>"]
    for name in shape.nodes:  # parents first: children are drawn on top of their container
        if name not in pos:
            continue
        x, y = pos[name]
        w, h = size[name]
        outcome = _outcome_key(coloured[name]) if name in coloured else None
        title = f"<title>{_xml(name)}{': ' + _xml(outcome) if outcome else ''}</title>"
        if name in shape.children:
            fill = _pale(_fill(outcome)) if outcome else "#f7f7f7"
            out.append(f'<g class="container" data-step="{_xml(name)}">{title}<rect x="{x:.1f}" y="{y:.1f}" '
                       f'width="{w:.1f}" height="{h:.1f}" rx="6" fill="{fill}" stroke="#777"/>'
                       f'<text x="{x + 8:.1f}" y="{y + 15:.1f}" font-weight="bold">{_xml(shape.label(name))}'
                       f"</text></g>")
        else:
            fill = _fill(outcome) if outcome else "#ffffff"
            ink = INKS.get(outcome or "", "#000000")
            out.append(f'<g class="node" data-step="{_xml(name)}">{title}<rect x="{x:.1f}" y="{y:.1f}" '
                       f'width="{w:.1f}" height="{h:.1f}" rx="5" fill="{fill}" stroke="#555"/>'
                       f'<text x="{x + w / 2:.1f}" y="{y + h / 2 + 4:.1f}" text-anchor="middle" fill="{ink}">'
                       f"{_xml(shape.label(name))}</text></g>")
    for gid, (_, text) in shape.junctions.items():
        key = f"#{gid}"
        if key not in pos:
            continue
        x, y = pos[key]
        w, h = size[key]
        out.append(f'<g class="junction"><title>{_xml(text)}</title><rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" '
                   f'height="{h:.1f}" rx="{h / 2:.1f}" fill="#fff" stroke="#555"/><text x="{x + w / 2:.1f}" '
                   f'y="{y + h / 2 + 3:.1f}" text-anchor="middle" font-size="9">{_xml(text)}</text></g>')
    for src, dst, label in shape.links:
        if src not in pos or dst not in pos:
            continue
        (sx, sy), (sw, sh) = pos[src], size[src]
        (dx, dy), (_, dh) = pos[dst], size[dst]
        x1, y1, x2, y2 = sx + sw, sy + (sh / 2 if src.startswith("#") or src not in shape.children else 11), \
            dx, dy + (dh / 2 if dst.startswith("#") or dst not in shape.children else 11)
        bend = max((x2 - x1) / 2, 20)
        out.append(f'<path d="M {x1:.1f} {y1:.1f} C {x1 + bend:.1f} {y1:.1f}, {x2 - bend:.1f} {y2:.1f}, '
                   f'{x2:.1f} {y2:.1f}" fill="none" stroke="#555" marker-end="url(#arrow)"/>')
        if label:  # near the target, where edges fanning out of one step have parted
            t = 0.7
            lx = ((1 - t) ** 3 * x1 + 3 * (1 - t) ** 2 * t * (x1 + bend) + 3 * (1 - t) * t * t * (x2 - bend)
                  + t ** 3 * x2)
            ly = (1 - t) ** 3 * y1 + 3 * (1 - t) ** 2 * t * y1 + 3 * (1 - t) * t * t * y2 + t ** 3 * y2
            out.append(f'<text x="{lx:.1f}" y="{ly - 3:.1f}" text-anchor="middle" font-size="10" fill="#333" '
                       f'stroke="#fff" stroke-width="3" paint-order="stroke" class="edge-label">{_xml(label)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _where(shape: _Shape, member: str) -> Optional[str]:
    """The container a node or junction is drawn in."""
    if member.startswith("#"):
        return shape.junctions[member[1:]][0]
    parent = shape.nodes[member].get("parent")
    return parent if parent in shape.nodes else None


def _containers_bottom_up(shape: _Shape) -> list[Optional[str]]:
    """Every container (None: the flow) after all the containers inside it."""
    order: list[Optional[str]] = []
    stack: list[tuple[Optional[str], bool]] = [(None, False)]
    while stack:
        container, done = stack.pop()
        if done:
            order.append(container)
            continue
        stack.append((container, True))
        stack.extend((child, False) for child in shape.children.get(container, ()) if child in shape.children)
    return order


def _layers(members: list[str], links: list[tuple[str, str]]) -> list[list[str]]:
    """Members in layers: each one layer after the latest it depends on; each layer ordered by its sources."""
    if not members:
        return []
    known = set(members)
    before: dict[str, list[str]] = {m: [] for m in members}
    after: dict[str, list[str]] = {m: [] for m in members}
    for src, dst in links:
        if src in known and dst in known and src != dst:
            before[dst].append(src)
            after[src].append(dst)
    waiting = {m: len(before[m]) for m in members}
    layer_of: dict[str, int] = {}
    ready = [m for m in members if not waiting[m]]
    while ready:
        member = ready.pop()
        layer_of[member] = max((layer_of[s] + 1 for s in before[member]), default=0)
        for nxt in after[member]:
            waiting[nxt] -= 1
            if not waiting[nxt]:
                ready.append(nxt)
    last = max(layer_of.values(), default=-1)
    for member in members:  # in a cycle (a graph not written by flow_graph): put it after the rest
        layer_of.setdefault(member, last + 1)
    layers: list[list[str]] = [[] for _ in range(max(layer_of.values()) + 1)]
    for member in members:
        layers[layer_of[member]].append(member)
    rank: dict[str, float] = {}
    for layer in layers:
        for member in layer:  # order by where its sources stand (the order given for the first layer)
            sources = [rank[s] for s in before[member] if s in rank]
            rank[member] = sum(sources) / len(sources) if sources else 0.0  # a stable sort keeps the rest
        layer.sort(key=lambda m: rank[m])
        for i, member in enumerate(layer):
            rank[member] = float(i)
    return [layer for layer in layers if layer]
