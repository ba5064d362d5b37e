"""The flow's graph (``sequent.graph``) and ``sequent graph``: the data flow.run() stores with each attempt,
its Mermaid and DOT drawings, from a flow file and from runs in real stores.

The last test checks the graph against the engine: for random flows (nested containers, containers
copied to two hosts, nested and/or groups, events), each node's requires, read from the graph
alone, hold for exactly the sets of fired events for which the translated start condition does.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import textwrap
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sequent as seq
from sequent.cli import main
from sequent.eventor import Eventor
from sequent.graph import COLOURS, flow_graph, step_statuses, to_dot, to_mermaid, to_svg
from sequent.runs import run_detail
from sequent.translate import translate

S, F, C, A = seq.STEP_SUCCESS, seq.STEP_FAILURE, seq.STEP_COMPLETE, seq.STEP_ACTIVE


def work(fail: bool = False) -> str:
    if fail:
        raise ValueError("it broke")
    return "done"


def engine_steps(flow: seq.Sequent) -> list[tuple[str, object, bool]]:
    """The engine's steps for ``flow``: (name, container, is_container) each, as the translator makes them."""
    ev = Eventor(name="t", store=":memory:", config={"task_construct": "thread"})
    translate(flow, ev)
    return [(s.name, s.scope, s.is_container) for s in ev.program.step_list]


def sample_flow(**kwargs) -> seq.Sequent:
    """prep -> box (a container on h1 and h2, repeated) -> after / either (or) -> last (nested and/or)."""
    flow = seq.Sequent(name="sample", **kwargs)
    prep = flow.add_step("prep", func=work)
    box = flow.add_step("box", hosts=["h1", "h2"], repeats=range(3), requires=((prep, S),))
    inner = box.add_step("inner")
    leaf = inner.add_step("leaf", func=work)
    inner.add_step("tail", func=work, requires=((leaf, C),))
    box.add_step("after_inner", func=work, requires=((inner, S),))
    after = flow.add_step("after", func=work, requires=((box, S),))
    either = flow.add_step("either", func=work, requires=seq.or_((box, F), (prep, F)))
    flow.add_step("last", func=work, requires=seq.or_(((after, S), (either, S)), (prep, A)))
    return flow


def edges(graph: dict) -> set[tuple[str, str, str]]:
    return {(e["from"], e["to"], e["label"]) for e in graph["edges"]}


def groups_of(graph: dict, node: str) -> dict[str, dict]:
    return {gid: g for gid, g in graph["groups"].items() if g["node"] == node}


# --------------------------------------------------------------------------------------------- the data

def test_nodes_are_the_engine_steps_in_order_with_their_containers_and_kinds():
    flow = sample_flow()
    graph = flow_graph(flow)
    assert graph["version"] == 1 and graph["flow"] == "sample"
    assert [(name, node["parent"], node["kind"] == "container") for name, node in graph["nodes"].items()] == \
        engine_steps(flow)
    assert graph["nodes"]["box@h2_inner_leaf"] == {
        "name": "leaf", "path": "box_inner_leaf", "parent": "box@h2_inner", "kind": "step", "hosts": ["h2"],
        "copy": "h2", "repeats": None, "delay": 0.0, "requires": None}
    assert graph["nodes"]["box@h1"]["repeats"] == "range(0, 3)" and graph["nodes"]["box@h1"]["name"] == "box@h1"


def test_the_graph_is_plain_json():
    graph = flow_graph(sample_flow())
    assert json.loads(json.dumps(graph)) == graph


def test_requires_are_edges_from_the_required_step_to_the_requiring_one_labelled_by_status():
    graph = flow_graph(sample_flow())
    assert {("box@h1_inner_leaf", "box@h1_inner_tail", "complete"), ("box@h2_inner", "box@h2_after_inner", "success"),
            ("prep", "box@h1", "success"), ("prep", "box@h2", "success")} <= edges(graph)
    [root] = groups_of(graph, "box@h1_inner_tail").values()
    assert root == {"op": "and", "node": "box@h1_inner_tail", "parent": None, "event": None, "label": None}


def test_an_or_of_requires_is_an_or_group_holding_its_edges():
    graph = flow_graph(sample_flow())
    root = graph["nodes"]["either"]["requires"]
    assert graph["groups"][root]["op"] == "or" and graph["groups"][root]["parent"] is None
    [copies] = [gid for gid, g in groups_of(graph, "either").items() if g["parent"] == root]
    assert {(e["from"], e["label"], e["group"]) for e in graph["edges"] if e["to"] == "either"} == {
        ("prep", "failure", root), ("box@h1", "failure", copies), ("box@h2", "failure", copies)}


def test_a_requirement_on_a_copied_container_is_a_group_over_its_copies_saying_how_they_combine():
    graph = flow_graph(sample_flow())
    [group] = [g for g in groups_of(graph, "after").values() if g["label"]]
    assert (group["op"], group["label"]) == ("and", "all copies")
    [group] = [g for g in groups_of(graph, "either").values() if g["label"]]
    assert (group["op"], group["label"]) == ("or", "all done, any failed")


def test_nested_and_or_groups_keep_their_nesting():
    graph = flow_graph(sample_flow())
    root = graph["nodes"]["last"]["requires"]
    nested = [g for g in groups_of(graph, "last").values() if g["parent"] == root]
    assert graph["groups"][root]["op"] == "or" and [g["op"] for g in nested] == ["and"]
    [and_id] = [gid for gid, g in groups_of(graph, "last").items() if g["parent"] == root]
    assert {(e["from"], e["label"], e["group"]) for e in graph["edges"] if e["to"] == "last"} == {
        ("after", "success", and_id), ("either", "success", and_id), ("prep", "active", root)}


def test_an_event_made_by_add_event_is_a_group_of_its_own_inside_the_requires():
    flow = seq.Sequent(name="events")
    a, b, c = (flow.add_step(n, func=work) for n in ("a", "b", "c"))
    failed = flow.add_event(seq.or_((a, F), (b, F)))
    flow.add_step("d", func=work, requires=(failed, (c, S)))
    graph = flow_graph(flow)
    root = graph["nodes"]["d"]["requires"]
    [event] = [gid for gid, g in groups_of(graph, "d").items() if g["parent"] == root]
    assert graph["groups"][root]["op"] == "and" and graph["groups"][event]["op"] == "or"
    assert {(e["from"], e["label"], e["group"]) for e in graph["edges"]} == {
        ("a", "failure", event), ("b", "failure", event), ("c", "success", root)}


def test_repeats_are_shown_short_and_never_break_the_graph():
    class Odd:
        def __iter__(self):
            return iter([1])

        def __repr__(self):
            raise RuntimeError("no repr")

    def batches():
        return iter([1, 2])

    flow = seq.Sequent(name="repeats")
    for name, repeats in (("odd", Odd()), ("called", batches), ("long", list(range(1000))), ("once", (1,))):
        flow.add_step(name, repeats=repeats).add_step("x", func=work)
    nodes = flow_graph(flow)["nodes"]
    assert nodes["odd"]["repeats"] == "<Odd>"
    assert nodes["called"]["repeats"].endswith("batches()")
    assert nodes["long"]["repeats"].startswith("[0, 1, 2") and len(nodes["long"]["repeats"]) < 45
    assert nodes["once"]["repeats"] is None


def test_a_flow_of_ten_thousand_steps_has_a_node_each():
    flow = seq.Sequent(name="big")
    previous = None
    for i in range(100):
        box = flow.add_step(f"c{i}", requires=((previous, S),) if previous else ())
        step = None
        for j in range(99):
            step = box.add_step(f"s{j}", func=work, requires=((step, C),) if step else ())
        previous = box
    graph = flow_graph(flow)
    assert len(graph["nodes"]) == 10_000 and len(graph["edges"]) == 99 + 100 * 98


def test_a_run_stores_the_graph_with_its_attempt(tmp_path, flow_config):
    flow = seq.Sequent(name="stored", store=str(tmp_path / "store.db"), config=flow_config(task_construct="thread"))
    first = flow.add_step("first", func=work)
    box = flow.add_step("box", repeats=[1, 2], requires=((first, S),))
    box.add_step("inside", func=work)
    flow.add_step("last", func=work, requires=seq.or_((box, S), (first, F)))
    assert flow.run() is True
    stored = run_detail(str(tmp_path / "store.db"), flow.run_id).graph
    assert stored == flow_graph(flow) and stored["nodes"]["box_inside"]["parent"] == "box"


def test_step_statuses_combine_the_newest_rows_of_each_steps_iterations(tmp_path, flow_config):
    store = str(tmp_path / "store.db")
    flow = seq.Sequent(name="statuses", store=store, config=flow_config(task_construct="thread"))
    loop = flow.add_step("loop", repeats=[1, 2])
    loop.add_step("part", func=work)
    bad = flow.add_step("bad", func=work, kwargs={"fail": True}, requires=((loop, S),))
    flow.add_step("never", func=work, requires=((bad, S),))
    assert flow.run() is False
    assert flow.run(run_mode=seq.RUN_RECOVER) is False  # the container runs again, its steps are skipped
    assert step_statuses(run_detail(store, flow.run_id).tasks) == {
        "loop": "success", "loop_part": "skipped", "bad": "failure"}


# --------------------------------------------------------------------------------------------- drawings

def mermaid_ids(text: str) -> dict[str, str]:
    """Each node's or subgraph's label -> its Mermaid id."""
    found = dict(re.findall(r'^\s*(?:subgraph )?(n\d+)\["([^"]*)"\]', text, re.M))
    return {re.sub(r"#(\d+);", lambda m: chr(int(m[1])), label): ident for ident, label in found.items()}


def test_mermaid_draws_containers_as_nested_subgraphs_requires_as_labelled_edges_and_or_junctions():
    text = to_mermaid(flow_graph(sample_flow()))
    assert text.startswith("flowchart LR\n")
    assert text.count("subgraph ") == 4 and len(re.findall(r"^\s*end$", text, re.M)) == 4
    lines = text.splitlines()
    box = next(i for i, line in enumerate(lines) if 'subgraph n1["box@h1' in line)
    assert lines[box + 1].strip().startswith("subgraph ") and lines[box + 1].startswith("    ")  # nested
    ids = mermaid_ids(text)
    assert f'{ids["prep"]} -->|"success"| n1' in text
    junctions = dict(re.findall(r"^\s*(j\d+)\(\(\"(and|or)\"\)\)", text, re.M))
    assert sorted(junctions.values()) == ["and", "or", "or"]
    assert re.search(rf'{ids["prep"]} -->\|"failure"\| j\d+', text)
    assert re.search(rf"j\d+ --> {ids['either']}", text)
    assert "all copies" in text and "all done, any failed" in text


def test_mermaid_and_dot_escape_what_the_flow_names(tmp_path):
    flow = seq.Sequent(name='say "hi" <b>]|#;{x} \\ end', store=str(tmp_path / "s.db"))
    flow.add_step("a", func=work, hosts=['h"1]'])
    graph = flow_graph(flow)
    mermaid = to_mermaid(graph)
    assert '"hi"' not in mermaid and "<b>" not in mermaid and "]|" not in mermaid
    assert "#34;hi#34;" in mermaid and "#60;b#62;" in mermaid
    assert all(line.count('"') % 2 == 0 for line in mermaid.splitlines())
    dot = to_dot(graph)
    assert 'label="flow say \\"hi\\" <b>]|#;{x} \\\\ end"' in dot
    assert 'label="a on h\\"1]"' in dot


def test_dot_draws_containers_as_nested_clusters_and_edges_to_them_clipped_at_their_border():
    text = to_dot(flow_graph(sample_flow()))
    assert text.startswith("digraph sequent {") and text.rstrip().endswith("}")
    assert text.count("subgraph cluster_") == 4 and text.count("{") == text.count("}")
    assert re.search(r'n0 -> n1 \[label="success", lhead=cluster_n1\]', text)
    assert re.search(r'-> j\d+ \[label="failure", ltail=cluster_n1\]', text)
    assert len(re.findall(r'shape=circle, .*label="or"', text)) == 2


@pytest.mark.skipif(shutil.which("dot") is None, reason="[required] Graphviz (dot) is not installed: apt-get install graphviz (.ci/run does)")
def test_graphviz_accepts_the_dot_of_a_flow_and_of_a_run_with_statuses(tmp_path):
    graph = flow_graph(sample_flow())
    for statuses in (None, {"prep": "success", "box@h1_inner_leaf": "failure", "after": "active"}):
        made = subprocess.run(["dot", "-Tsvg"], input=to_dot(graph, statuses), capture_output=True, text=True,
                              timeout=60)
        assert made.returncode == 0 and made.stderr == "", made.stderr
        assert "<svg" in made.stdout and ">leaf</text>" in made.stdout
        if statuses:
            assert COLOURS["failure"] in made.stdout


def test_the_svg_drawing_places_every_node_and_colours_it_by_outcome():
    graph = flow_graph(sample_flow())
    svg = to_svg(graph, {"prep": "failure"})
    steps = re.findall(r'<g class="(node|container)" data-step="([^"]+)">', svg)
    assert sorted(name for _, name in steps) == sorted(graph["nodes"])
    assert re.search(rf'data-step="prep"><title>prep: failure</title><rect [^>]*fill="{COLOURS["failure"]}"', svg)
    assert re.search(rf'data-step="after"><title>after: not started</title><rect [^>]*fill="{COLOURS["not started"]}"',
                     svg)


# --------------------------------------------------------------------------------------------- sequent graph

def sequent(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def flow_file(tmp_path: Path, body: str) -> str:
    """A flow file with a name of its own (flow files are imported under their name)."""
    path = tmp_path / f"graphflow_{uuid.uuid4().hex[:8]}.py"
    path.write_text(textwrap.dedent(body))
    return str(path)


FLOW_FILE = """
    import sequent as seq

    def work():
        return 1

    flow = seq.Sequent(name="filed")
    a = flow.add_step("a", func=work)
    box = flow.add_step("box", requires=((a, seq.STEP_SUCCESS),))
    x = box.add_step("x", func=work)
    box.add_step("y", func=work, requires=((x, seq.STEP_COMPLETE),))
    flow.add_step("z", func=work, requires=seq.or_((box, seq.STEP_FAILURE), (a, seq.STEP_FAILURE)))
"""


def test_graph_of_a_flow_file_prints_mermaid_with_subgraphs_labelled_edges_and_or_groups(tmp_path, capsys):
    status, out, err = sequent(capsys, "graph", flow_file(tmp_path, FLOW_FILE))
    assert (status, err) == (0, "")
    assert 'subgraph n1["box"]' in out and 'n2 -->|"complete"| n3' in out and 'n0 -->|"success"| n1' in out
    assert re.search(r'n1 -->\|"failure"\| (j\d+)', out) and re.search(r'n0 -->\|"failure"\| j\d+', out)
    assert re.search(r'j\d+\(\("or"\)\)', out) and "classDef" not in out


def test_graph_of_a_flow_file_prints_dot_with_a_cluster_per_container(tmp_path, capsys):
    status, out, _ = sequent(capsys, "graph", flow_file(tmp_path, FLOW_FILE), "--format", "dot")
    assert status == 0
    assert "subgraph cluster_n1 {" in out and 'n2 -> n3 [label="complete"];' in out
    assert 'n0 -> n1 [label="success", lhead=cluster_n1];' in out


def test_graph_of_a_flow_files_build_flow_gets_the_arguments_after_the_dashes(tmp_path, capsys):
    path = flow_file(tmp_path, """
        import sequent as seq

        def build_flow(argv):
            flow = seq.Sequent(name="built")
            for name in argv:
                flow.add_step(name, func=print)
            return flow
    """)
    status, out, _ = sequent(capsys, "graph", path, "--", "one", "two")
    assert status == 0 and '["one"]' in out and '["two"]' in out


@pytest.fixture
def failed_run(tmp_path, flow_config) -> dict:
    """A run in which ``box_bad`` fails (box fails with it), ``after`` never starts and ``loop`` succeeds."""
    store = str(tmp_path / "runs.db")
    flow = seq.Sequent(name="failing", store=store, config=flow_config(task_construct="thread"))
    loop = flow.add_step("loop", repeats=[1, 2])
    loop.add_step("part", func=work)
    box = flow.add_step("box", requires=((loop, S),))
    box.add_step("bad", func=work, kwargs={"fail": True})
    flow.add_step("after", func=work, requires=((box, S),))
    assert flow.run() is False
    return {"store": store, "run_id": flow.run_id}


def test_graph_of_a_stored_run_colours_each_node_by_its_outcome_in_mermaid(failed_run, capsys):
    status, out, err = sequent(capsys, "graph", failed_run["store"], failed_run["run_id"])
    assert (status, err) == (0, "")
    ids = mermaid_ids(out)
    classes = {klass: set(members.split(",")) for members, klass in re.findall(r"^\s*class (\S+) (\S+)$", out, re.M)}
    assert classes["st_failure"] == {ids["box"], ids["bad"]}
    assert classes["st_success"] == {ids["loop ×[1, 2]"], ids["part"]}
    assert classes["st_not_started"] == {ids["after"]}
    assert f"classDef st_failure fill:{COLOURS['failure']}" in out


def test_graph_of_the_latest_run_colours_each_node_by_its_outcome_in_dot(failed_run, capsys):
    status, out, _ = sequent(capsys, "graph", failed_run["store"], "--latest", "--format", "dot")
    assert status == 0
    assert re.search(rf'\[label="bad", tooltip="box_bad: failure", fillcolor="{COLOURS["failure"]}"', out)
    assert re.search(rf'\[label="after", tooltip="after: not started", fillcolor="{COLOURS["not started"]}"', out)
    assert re.search(r'graph \[label="box", .*tooltip="box: failure"\]', out)


def test_graph_json_gives_the_stored_graph_and_each_steps_status(failed_run, capsys):
    status, out, _ = sequent(capsys, "graph", failed_run["store"], failed_run["run_id"], "--format", "json")
    data = json.loads(out)
    assert status == 0 and data["graph"]["version"] == 1
    assert data["statuses"] == {"loop": "success", "loop_part": "success", "box": "failure", "box_bad": "failure",
                                "after": "not started"}


def test_graph_of_a_run_without_a_stored_graph_draws_its_steps_without_edges_and_says_so(failed_run, capsys):
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{failed_run['store']}")
    with engine.begin() as conn:  # what a store written before graphs were kept holds
        conn.execute(sa.text("UPDATE sequent_attempts SET graph = NULL"))
    engine.dispose()
    status, out, err = sequent(capsys, "graph", failed_run["store"], failed_run["run_id"])
    assert status == 0 and "recorded no graph" in err and "without their requires" in err
    assert "-->" not in out and 'subgraph n2["box"]' in out and 'n3["box_bad"]' in out
    assert re.search(r"class n2,n3 st_failure", out)


def test_graph_of_no_such_run_or_store_exits_3_and_bad_usage_exits_2(failed_run, tmp_path, capsys):
    status, _, err = sequent(capsys, "graph", failed_run["store"], "no-such-run")
    assert status == 3 and "no-such-run" in err and "\n" == err[-1] and err.count("\n") == 1
    assert sequent(capsys, "graph", str(tmp_path / "missing.db"), "--latest")[0] == 3
    assert sequent(capsys, "graph", failed_run["store"])[0] == 2  # no RUN_ID
    assert sequent(capsys, "graph", failed_run["store"], "a", "b")[0] == 2
    assert sequent(capsys, "graph", failed_run["store"], "--latest", "--", "x")[0] == 2
    assert sequent(capsys, "graph", failed_run["store"], failed_run["run_id"], "--latest")[0] == 2
    status, _, err = sequent(capsys, "graph", str(tmp_path / "missing.py"))
    assert status == 2 and "missing.py" in err


# --------------------------------------------------------------------------------------------- against the engine

STATUSES = (seq.STEP_SUCCESS, seq.STEP_FAILURE, seq.STEP_COMPLETE, seq.STEP_READY, seq.STEP_ACTIVE)
PROPERTY_EXAMPLES = min(300, settings.default.max_examples)


@st.composite
def requires_of(draw, earlier: list, owner, depth: int = 0):
    """A requires expression on ``earlier`` siblings: pairs, and/or groups (tuples too), events."""
    kind = draw(st.sampled_from(("pair", "pair", "and", "or", "tuple", "event") if depth < 2 else ("pair",)))
    if kind == "pair":
        return (draw(st.sampled_from(earlier)), draw(st.sampled_from(STATUSES)))
    items = [draw(requires_of(earlier, owner, depth + 1)) for _ in range(draw(st.integers(1, 3)))]
    if kind == "event":
        return owner.add_event(seq.and_(*items) if draw(st.booleans()) else seq.or_(*items))
    return {"and": lambda: seq.and_(*items), "or": lambda: seq.or_(*items), "tuple": lambda: tuple(items)}[kind]()


@st.composite
def random_flows(draw) -> seq.Sequent:
    flow = seq.Sequent(name="random")

    def fill(node, depth: int) -> None:
        made = []
        for i in range(draw(st.integers(1, 4))):
            requires = draw(requires_of(made, node)) if made and draw(st.booleans()) else ()
            container = depth < 3 and draw(st.integers(0, 2)) == 0
            hosts = ["h1", "h2"] if container and depth == 1 and draw(st.booleans()) else None
            step = node.add_step(f"s{i}", func=None if container else work, requires=requires, hosts=hosts)
            if container:
                fill(step, depth + 1)
            made.append(step)

    fill(flow, 1)
    return flow


def graph_holds(graph: dict, node: str, fired: set) -> bool:
    """Whether ``node``'s requires hold once the events in ``fired`` fired, read from the graph alone."""
    def edge_holds(edge: dict) -> bool:
        statuses = ("success", "failure") if edge["label"] == "complete" else (edge["label"],)
        return any(f"{edge['from']}_{status}" in fired for status in statuses)

    def holds(gid: str) -> bool:
        group = graph["groups"][gid]
        edges = [e for e in graph["edges"] if e["group"] == gid]
        results = [edge_holds(e) for e in edges] + [holds(g) for g, sub in graph["groups"].items()
                                                    if sub["parent"] == gid]
        if group["label"] == "all done, any failed":  # a copied container's failure
            return all(f"{e['from']}_success" in fired or f"{e['from']}_failure" in fired for e in edges) \
                and any(f"{e['from']}_failure" in fired for e in edges)
        return all(results) if group["op"] == "and" else any(results)

    return holds(graph["nodes"][node]["requires"])


@settings(max_examples=PROPERTY_EXAMPLES)
@given(flow=random_flows(), data=st.data())
def test_every_nodes_requires_in_the_graph_hold_exactly_when_the_engines_start_condition_does(flow, data):
    graph = flow_graph(flow)
    program = Eventor(name="t", store=":memory:", config={"task_construct": "thread"})
    translate(flow, program)
    program = program.program
    assert [(n, g["parent"], g["kind"] == "container") for n, g in graph["nodes"].items()] == \
        [(s.name, s.scope, s.is_container) for s in program.step_list]
    statuses = sorted(e for e in program.events if not e.endswith("_start"))
    for name, node in graph["nodes"].items():
        copy = node["copy"]
        base = name[:-len(f"@{copy}")] if copy and name.endswith(f"@{copy}") else name
        condition = program.events[f"{base}_start"].condition
        if node["requires"] is None:
            assert condition is None
            continue
        for edge in graph["edges"]:
            if edge["to"] == name:
                assert graph["nodes"][edge["from"]]["parent"] == node["parent"]
        for _ in range(4):
            fired = set(data.draw(st.lists(st.sampled_from(statuses), unique=True), label="fired")) if statuses \
                else set()
            assert graph_holds(graph, name, fired) == condition.holds(fired), (name, sorted(fired))


def test_a_flow_larger_than_the_graph_limit_keeps_only_a_note_and_is_drawn_from_its_shape(tmp_path, monkeypatch,
                                                                                            capsys):
    import sequent.graph as graphs

    monkeypatch.setattr(graphs, "GRAPH_LIMIT", 3)
    store = str(tmp_path / "big.db")
    flow = seq.Sequent(name="big", store=store, config={"task_construct": "thread",
                                                         "LOGGING": {"logdir": str(tmp_path), "console": False}})
    prev = None
    for i in range(4):
        prev = flow.add_step(f"s{i}", func=work, requires=((prev, S),) if prev is not None else ())
    assert flow.run()
    assert run_detail(store, flow.run_id).graph == {"version": 1, "flow": "big", "omitted": 4}
    assert main(["graph", store, flow.run_id]) == 0
    out, err = capsys.readouterr()
    assert "the run's flow has 4 steps, more than the 3 whose graph is kept" in err
    assert all(f"s{i}" in out for i in range(4)) and "-->" not in out  # its steps, without requires
