"""Unit tests of the translator: the Sequent step tree as an Eventor program (SPEC A2, A4, B2).

Each test builds a flow, translates it into a fresh Eventor and inspects the program
(``ev.program.events/steps/assocs/initial``) or its text form (``describe``); nothing runs.
"""
import re

import pytest

import sequent as seq
from sequent.eventor import Eventor
from sequent.eventor.conditions import And, Or, Ref
from sequent.eventor.model import StepReplay, StepStatus, TaskConstruct
from sequent.translate import describe, translate
from sequent.tree import parse_requires

S, F, C = seq.STEP_SUCCESS, seq.STEP_FAILURE, seq.STEP_COMPLETE


def prog(*args, **kwargs):
    return args, kwargs


def new_flow(**config):
    return seq.Sequent(name='t', config={'task_construct': 'thread', **config}, store=':memory:')


def program(flow, **config):
    """Translate ``flow`` into a new Eventor; returns the Eventor."""
    ev = Eventor(name='t', store=':memory:', config={'task_construct': 'thread', **config})
    translate(flow, ev)
    return ev


def seed_flow():
    """The seed's simple flow (SPEC B2.7)."""
    flow = new_flow()
    s1 = flow.add_step('s1', repeats=[1, 2])
    s11 = s1.add_step('s11', repeats=[1, 2])
    s111 = s11.add_step('s111', func=prog, kwargs={'progname': 'prog1'})
    s11.add_step('s112', func=prog, kwargs={'progname': 'prog2'}, requires=((s111, S),))
    s1.add_step('s12', func=prog, kwargs={'progname': 'prog3'}, requires=((s11, S),))
    flow.add_step('s2', func=prog, kwargs={'progname': 'prog4'}, requires=((s1, S),))
    return flow


@pytest.fixture
def seed():
    return program(seed_flow()).program


def cond(p, event):
    return p.events[event].condition


# ---------------------------------------------------------------------------- the seed flow: names

def test_seed_flow_steps_are_the_flattened_paths_with_one_engine_step_per_container(seed):
    assert [s.name for s in seed.step_list] == ['s1', 's1_s11', 's1_s11_s111', 's1_s11_s112', 's1_s12', 's2']
    assert {s.name for s in seed.step_list if s.is_container} == {'s1', 's1_s11'}


def test_seed_flow_has_start_events_and_only_the_required_status_events(seed):
    assert set(seed.events) == {
        's1_start', 's1_success', 's1_s11_start', 's1_s11_success', 's1_s11_s111_start',
        's1_s11_s111_success', 's1_s11_s112_start', 's1_s12_start', 's2_start'}


def test_seed_flow_has_no_next_or_end_steps_or_events(seed):
    names = set(seed.events) | set(seed.steps)
    assert not [n for n in names if n.endswith(('_next', '_end'))]


def test_seed_flow_start_conditions_are_refs_to_the_required_sibling_events(seed):
    assert cond(seed, 's1_s11_s112_start') == Ref('s1_s11_s111_success')
    assert cond(seed, 's1_s12_start') == Ref('s1_s11_success')
    assert cond(seed, 's2_start') == Ref('s1_success')


def test_seed_flow_starters_have_no_condition(seed):
    for name in ('s1_start', 's1_s11_start', 's1_s11_s111_start'):
        assert cond(seed, name) is None, name


def test_seed_flow_only_the_root_starter_is_fired_initially_at_sequence_1(seed):
    assert seed.initial == [('s1_start', (1,))]


def test_seed_flow_triggers_exist_only_for_required_statuses(seed):
    triggers = {s.name: dict(s.triggers) for s in seed.step_list}
    assert triggers == {
        's1': {S: ('s1_success',)},
        's1_s11': {S: ('s1_s11_success',)},
        's1_s11_s111': {S: ('s1_s11_s111_success',)},
        's1_s11_s112': {},
        's1_s12': {},
        's2': {},
    }


def test_seed_flow_containers_start_their_starter_children(seed):
    assert seed.steps['s1'].starts == ('s1_s11_start',)
    assert seed.steps['s1_s11'].starts == ('s1_s11_s111_start',)


def test_seed_flow_processing_steps_start_nothing(seed):
    assert seed.steps['s1_s11_s111'].starts == ()
    assert not seed.steps['s2'].is_container


def test_seed_flow_scopes_are_the_container_paths(seed):
    scopes = {s.name: s.scope for s in seed.step_list}
    assert scopes == {'s1': None, 's1_s11': 's1', 's1_s11_s111': 's1_s11', 's1_s11_s112': 's1_s11',
                      's1_s12': 's1', 's2': None}


def test_seed_flow_event_scopes_follow_the_step_they_belong_to(seed):
    scopes = {e.name: e.scope for e in seed.events.values()}
    assert scopes['s1_start'] is None and scopes['s1_success'] is None and scopes['s2_start'] is None
    assert scopes['s1_s11_start'] == 's1' and scopes['s1_s11_success'] == 's1'
    assert scopes['s1_s12_start'] == 's1'
    assert scopes['s1_s11_s111_success'] == 's1_s11' and scopes['s1_s11_s112_start'] == 's1_s11'


def test_seed_flow_each_start_event_is_associated_with_its_step_without_delay(seed):
    assoc = {ev: [(a.target, a.target_is_step, a.delay) for a in lst] for ev, lst in seed.assocs.items()}
    assert assoc == {f'{s}_start': [(s, True, 0.0)] for s in seed.steps}


def test_seed_flow_containers_keep_their_repeats(seed):
    assert seed.steps['s1'].repeats == [1, 2]
    assert seed.steps['s1_s11'].repeats == [1, 2]


def test_seed_flow_processing_step_keeps_func_and_kwargs(seed):
    step = seed.steps['s1_s11_s112']
    assert step.func is prog
    assert dict(step.kwargs) == {'progname': 'prog2'}


def test_describe_lists_events_with_conditions_and_steps_with_triggers():
    lines = list(describe(program(seed_flow())))
    assert 'event s1_s11_s112_start = s1_s11_s111_success' in lines
    assert 'event s1_s11_s111_start' in lines
    assert 'container s1 [success->s1_success]' in lines
    assert 'step s1_s11_s111 [success->s1_s11_s111_success]' in lines
    assert 'step s1_s11_s112' in lines
    assert 'step s2' in lines


def test_translating_a_flow_twice_gives_the_same_program():
    flow = seed_flow()
    assert list(describe(program(flow))) == list(describe(program(flow)))


# ---------------------------------------------------------------------------- requires grammar

def test_complete_becomes_or_of_success_and_failure():
    flow = new_flow()
    a = flow.add_step('a')
    flow.add_step('b', requires=((a, C),))
    p = program(flow).program
    assert cond(p, 'b_start') == Or((Ref('a_success'), Ref('a_failure')))


def test_complete_requirement_triggers_both_success_and_failure_events():
    flow = new_flow()
    a = flow.add_step('a')
    flow.add_step('b', requires=((a, C),))
    p = program(flow).program
    assert dict(p.steps['a'].triggers) == {S: ('a_success',), F: ('a_failure',)}
    assert {'a_success', 'a_failure'} <= set(p.events)
    assert p.steps['a'].handles_failure


def test_success_requirement_leaves_failure_unhandled():
    flow = new_flow()
    a = flow.add_step('a')
    flow.add_step('b', requires=((a, S),))
    p = program(flow).program
    assert 'a_failure' not in p.events
    assert not p.steps['a'].handles_failure


def test_failure_requirement_makes_only_the_failure_event():
    flow = new_flow()
    a = flow.add_step('a')
    flow.add_step('b', requires=((a, F),))
    p = program(flow).program
    assert dict(p.steps['a'].triggers) == {F: ('a_failure',)}
    assert 'a_success' not in p.events
    assert cond(p, 'b_start') == Ref('a_failure')


def test_several_requires_in_a_tuple_are_anded():
    flow = new_flow()
    a, b = flow.add_step('a'), flow.add_step('b')
    flow.add_step('c', requires=((a, S), (b, F)))
    assert cond(program(flow).program, 'c_start') == And((Ref('a_success'), Ref('b_failure')))


def test_or_of_pairs_becomes_or():
    flow = new_flow()
    a, b = flow.add_step('a'), flow.add_step('b')
    flow.add_step('c', requires=seq.or_((a, F), (b, S)))
    assert cond(program(flow).program, 'c_start') == Or((Ref('a_failure'), Ref('b_success')))


def test_and_of_pairs_becomes_and():
    flow = new_flow()
    a, b = flow.add_step('a'), flow.add_step('b')
    flow.add_step('c', requires=seq.and_((a, S), (b, S)))
    assert cond(program(flow).program, 'c_start') == And((Ref('a_success'), Ref('b_success')))


def test_nested_tuples_are_flattened_into_one_and():
    flow = new_flow()
    a, b, c = flow.add_step('a'), flow.add_step('b'), flow.add_step('c')
    flow.add_step('d', requires=((a, S), ((b, S), (c, S))))
    assert cond(program(flow).program, 'd_start') == And((Ref('a_success'), Ref('b_success'), Ref('c_success')))


def test_or_nested_inside_and_keeps_its_grouping():
    flow = new_flow()
    a, b, c = flow.add_step('a'), flow.add_step('b'), flow.add_step('c')
    flow.add_step('d', requires=((a, S), seq.or_((b, S), (c, C))))
    expected = And((Ref('a_success'), Or((Ref('b_success'), Ref('c_success'), Ref('c_failure')))))
    assert cond(program(flow).program, 'd_start') == expected


def test_and_nested_inside_or_keeps_its_grouping():
    flow = new_flow()
    a, b, c = flow.add_step('a'), flow.add_step('b'), flow.add_step('c')
    flow.add_step('d', requires=seq.or_((a, F), seq.and_((b, S), (c, S))))
    expected = Or((Ref('a_failure'), And((Ref('b_success'), Ref('c_success')))))
    assert cond(program(flow).program, 'd_start') == expected


def test_add_event_requires_are_inlined_into_the_step_condition():
    flow = new_flow()
    s1, s2 = flow.add_step('s1'), flow.add_step('s2')
    e1 = flow.add_event(((s1, C), (s2, C)))
    flow.add_step('s3', requires=(e1,))
    p = program(flow).program
    assert cond(p, 's3_start') == And((Or((Ref('s1_success'), Ref('s1_failure'))),
                                       Or((Ref('s2_success'), Ref('s2_failure')))))
    assert not [name for name in p.events if 'event' in name]


def test_add_event_combined_with_a_pair_inside_or():
    flow = new_flow()
    a, b, c = flow.add_step('a'), flow.add_step('b'), flow.add_step('c')
    e = flow.add_event(((a, S), (b, S)))
    flow.add_step('d', requires=seq.or_(e, (c, F)))
    p = program(flow).program
    assert cond(p, 'd_start') == Or((And((Ref('a_success'), Ref('b_success'))), Ref('c_failure')))
    assert dict(p.steps['c'].triggers) == {F: ('c_failure',)}


def test_event_of_a_container_is_inlined_with_container_scope():
    flow = new_flow()
    box = flow.add_step('box')
    x, y = box.add_step('x'), box.add_step('y')
    e = box.add_event(((x, S), (y, S)))
    box.add_step('z', requires=(e,))
    p = program(flow).program
    assert cond(p, 'box_z_start') == And((Ref('box_x_success'), Ref('box_y_success')))
    assert p.events['box_z_start'].scope == 'box'
    assert p.events['box_x_success'].scope == 'box'


def test_ready_requirement_triggers_ready_event():
    flow = new_flow()
    a = flow.add_step('a')
    flow.add_step('b', requires=((a, seq.STEP_READY),))
    p = program(flow).program
    assert dict(p.steps['a'].triggers) == {StepStatus.ready: ('a_ready',)}
    assert cond(p, 'b_start') == Ref('a_ready')


def test_active_requirement_triggers_active_event():
    flow = new_flow()
    a = flow.add_step('a')
    flow.add_step('b', requires=((a, seq.STEP_ACTIVE),))
    p = program(flow).program
    assert dict(p.steps['a'].triggers) == {StepStatus.active: ('a_active',)}
    assert cond(p, 'b_start') == Ref('a_active')


def test_statuses_required_by_several_siblings_are_merged():
    flow = new_flow()
    a = flow.add_step('a')
    flow.add_step('b', requires=((a, S),))
    flow.add_step('c', requires=((a, F),))
    flow.add_step('d', requires=((a, seq.STEP_ACTIVE),))
    assert dict(program(flow).program.steps['a'].triggers) == {
        StepStatus.active: ('a_active',), S: ('a_success',), F: ('a_failure',)}


def test_container_required_with_failure_gets_a_failure_trigger():
    flow = new_flow()
    box = flow.add_step('box')
    box.add_step('x')
    flow.add_step('handler', requires=((box, F),))
    p = program(flow).program
    assert p.steps['box'].is_container
    assert dict(p.steps['box'].triggers) == {F: ('box_failure',)}
    assert cond(p, 'handler_start') == Ref('box_failure')


def test_container_with_several_starters_starts_them_all_in_order():
    flow = new_flow()
    box = flow.add_step('box')
    a = box.add_step('a')
    box.add_step('b')
    box.add_step('c', requires=((a, S),))
    box.add_step('d')
    assert program(flow).program.steps['box'].starts == ('box_a_start', 'box_b_start', 'box_d_start')


def test_several_root_starters_are_all_fired_at_sequence_1():
    flow = new_flow()
    a = flow.add_step('a')
    flow.add_step('b')
    flow.add_step('c', requires=((a, S),))
    assert program(flow).program.initial == [('a_start', (1,)), ('b_start', (1,))]


def test_nested_container_starters_are_not_initial():
    p = program(seed_flow()).program
    assert [name for name, _ in p.initial] == ['s1_start']
    assert 's1_s11_s111_start' in p.steps['s1_s11'].starts


def test_a_cycle_built_behind_add_step_is_refused_naming_the_steps():
    flow = new_flow()
    a = flow.add_step('a')
    b = flow.add_step('b', requires=((a, S),))
    a.requires = parse_requires(((b, S),), flow, "step 'a'")  # add_step cannot make a cycle
    with pytest.raises(seq.SequentError, match='cycle') as info:
        program(flow)
    assert re.search(r'\ba -> b -> a\b|\bb -> a -> b\b', str(info.value))


# ---------------------------------------------------------------------------- config, delay, recovery

def test_flow_level_task_construct_is_the_default_of_every_step():
    flow = new_flow()
    box = flow.add_step('box')
    box.add_step('x')
    flow.add_step('y')
    p = program(flow, task_construct='process').program
    assert {s.name: s.config.task_construct for s in p.step_list} == {
        'box': TaskConstruct.process, 'box_x': TaskConstruct.process, 'y': TaskConstruct.process}


def test_container_config_is_inherited_by_its_children():
    flow = new_flow()
    box = flow.add_step('box', config={'task_construct': 'thread', 'max_concurrent': 2})
    box.add_step('x')
    inner = box.add_step('inner')
    inner.add_step('deep')
    flow.add_step('outside')
    p = program(flow, task_construct='process').program
    for name in ('box', 'box_x', 'box_inner', 'box_inner_deep'):
        assert p.steps[name].config.task_construct is TaskConstruct.thread, name
        assert p.steps[name].config.max_concurrent == 2, name
    assert p.steps['outside'].config.task_construct is TaskConstruct.process
    assert p.steps['outside'].config.max_concurrent == -1


def test_child_config_overrides_the_inherited_container_config():
    flow = new_flow()
    box = flow.add_step('box', config={'task_construct': 'thread', 'stop_on_exception': False})
    box.add_step('x', config={'task_construct': 'process'})
    box.add_step('y')
    p = program(flow, task_construct='process').program
    assert p.steps['box_x'].config.task_construct is TaskConstruct.process
    assert p.steps['box_x'].config.stop_on_exception is False
    assert p.steps['box_y'].config.task_construct is TaskConstruct.thread


def test_step_config_keys_reach_the_engine_step_config():
    flow = new_flow()
    flow.add_step('a', config={'stop_on_exception': False, 'max_concurrent': 3, 'sequence_arg_name': 'sq',
                               'pass_logger_to_task': True})
    cfg = program(flow).program.steps['a'].config
    assert (cfg.stop_on_exception, cfg.max_concurrent, cfg.sequence_arg_name, cfg.pass_logger_to_task) == \
        (False, 3, 'sq', True)


def test_delay_is_put_on_the_association_of_the_start_event():
    flow = new_flow()
    a = flow.add_step('a')
    flow.add_step('b', requires=((a, S),), delay=0.3)
    p = program(flow).program
    assert [(x.target, x.delay) for x in p.assocs['b_start']] == [('b', 0.3)]
    assert [(x.target, x.delay) for x in p.assocs['a_start']] == [('a', 0.0)]


def test_delay_of_a_container_is_put_on_its_start_association():
    flow = new_flow()
    box = flow.add_step('box', delay=1.5)
    box.add_step('x', delay=0.25)
    p = program(flow).program
    assert [(x.target, x.delay) for x in p.assocs['box_start']] == [('box', 1.5)]
    assert [(x.target, x.delay) for x in p.assocs['box_x_start']] == [('box_x', 0.25)]


def test_step_recovery_map_is_merged_over_the_defaults():
    flow = new_flow()
    flow.add_step('a', recovery={seq.STEP_FAILURE: seq.STEP_SKIP})
    rec = program(flow).program.steps['a'].recovery
    assert rec[F] is StepReplay.skip
    assert rec[S] is StepReplay.skip
    assert rec[StepStatus.active] is StepReplay.rerun


def test_containers_always_rerun_in_recovery():
    flow = new_flow()
    box = flow.add_step('box', recovery={seq.STEP_SUCCESS: seq.STEP_SKIP})
    box.add_step('x')
    rec = program(flow).program.steps['box'].recovery
    assert set(rec.values()) == {StepReplay.rerun}


def test_args_and_import_hints_are_carried_to_the_engine_step():
    flow = new_flow()
    flow.add_step('a', func=prog, args=(1, 2), kwargs={'k': 3}, import_module='json', import_file='x.py')
    step = program(flow).program.steps['a']
    assert (step.args, dict(step.kwargs)) == ((1, 2), {'k': 3})
    assert step.import_module == ('json',)
    assert step.import_file == 'x.py'


def test_translated_program_passes_engine_validation():
    flow = seed_flow()
    a = flow.add_step('extra')
    flow.add_step('after', requires=seq.or_((a, C), (a, seq.STEP_ACTIVE)), delay=0.1)
    program(flow).validate()


# ---------------------------------------------------------------------------- hosts (SPEC B6, issue 10)

A, R = seq.STEP_ACTIVE, seq.STEP_READY


def hosts_of(p):
    """Each engine step's host names, as a tuple (empty: it runs on the flow's host)."""
    return {s.name: s.hosts for s in p.step_list}


def test_steps_without_hosts_get_no_host():
    assert set(hosts_of(program(seed_flow()).program).values()) == {()}


def test_processing_step_with_hosts_gets_them_as_a_tuple_in_order():
    flow = new_flow()
    flow.add_step('a', hosts=['h2', 'h1'])
    flow.add_step('b', hosts='h3')
    flow.add_step('c')
    assert hosts_of(program(flow).program) == {'a': ('h2', 'h1'), 'b': ('h3',), 'c': ()}


def test_processing_step_with_several_hosts_is_one_engine_step():
    flow = new_flow()
    a = flow.add_step('a', hosts=['h1', 'h2'])
    flow.add_step('b', requires=((a, S),))
    p = program(flow).program
    assert [s.name for s in p.step_list] == ['a', 'b']
    assert cond(p, 'b_start') == Ref('a_success')
    assert 'step a [success->a_success] on h1, h2' in list(describe(program(flow)))


def test_container_on_one_host_is_one_engine_container_whose_steps_inherit_it():
    flow = new_flow()
    box = flow.add_step('box', hosts=['h1'])
    inner = box.add_step('inner')
    inner.add_step('deep')
    box.add_step('x')
    flow.add_step('outside')
    p = program(flow).program
    assert hosts_of(p) == {'box': ('h1',), 'box_inner': ('h1',), 'box_inner_deep': ('h1',), 'box_x': ('h1',),
                           'outside': ()}
    assert p.steps['box'].starts == ('box_inner_start', 'box_x_start')


def test_step_with_hosts_inside_a_container_without_hosts_keeps_its_own():
    flow = new_flow()
    box = flow.add_step('box')
    box.add_step('x', hosts=['h1', 'h2'])
    box.add_step('y')
    assert hosts_of(program(flow).program) == {'box': (), 'box_x': ('h1', 'h2'), 'box_y': ()}


def two_host_flow():
    """s1 on h1 and h2 holding s11 (a container) and s12; s2 requires s1."""
    flow = new_flow()
    s1 = flow.add_step('s1', hosts=['h1', 'h2'], repeats=[1, 2], delay=0.5,
                       config={'max_concurrent': 2})
    s11 = s1.add_step('s11', repeats=[1, 2])
    s111 = s11.add_step('s111', func=prog)
    s11.add_step('s112', func=prog, requires=((s111, S),))
    s1.add_step('s12', func=prog, requires=((s11, S),))
    flow.add_step('s2', func=prog, requires=((s1, S),))
    return flow


def test_container_on_two_hosts_is_copied_once_per_host_with_prefixed_descendants():
    p = program(two_host_flow()).program
    assert [s.name for s in p.step_list] == [
        's1@h1', 's1@h1_s11', 's1@h1_s11_s111', 's1@h1_s11_s112', 's1@h1_s12',
        's1@h2', 's1@h2_s11', 's1@h2_s11_s111', 's1@h2_s11_s112', 's1@h2_s12', 's2']
    assert hosts_of(p) == {
        's1@h1': ('h1',), 's1@h1_s11': ('h1',), 's1@h1_s11_s111': ('h1',), 's1@h1_s11_s112': ('h1',),
        's1@h1_s12': ('h1',),
        's1@h2': ('h2',), 's1@h2_s11': ('h2',), 's1@h2_s11_s111': ('h2',), 's1@h2_s11_s112': ('h2',),
        's1@h2_s12': ('h2',), 's2': ()}


def test_copies_have_their_own_scopes_starts_events_and_conditions():
    p = program(two_host_flow()).program
    for h in ('h1', 'h2'):
        c = f's1@{h}'
        assert p.steps[c].is_container and p.steps[c].scope is None
        assert p.steps[c].repeats == [1, 2]
        assert p.steps[c].starts == (f'{c}_s11_start',)
        assert p.steps[f'{c}_s11'].starts == (f'{c}_s11_s111_start',)
        assert {s: p.steps[f'{c}_{s}'].scope for s in ('s11', 's12', 's11_s111', 's11_s112')} == {
            's11': c, 's12': c, 's11_s111': f'{c}_s11', 's11_s112': f'{c}_s11'}
        assert cond(p, f'{c}_s12_start') == Ref(f'{c}_s11_success')
        assert cond(p, f'{c}_s11_s112_start') == Ref(f'{c}_s11_s111_success')
        assert p.events[f'{c}_s11_success'].scope == c
        assert p.steps[f'{c}_s11_s111'].func is prog
        assert p.steps[f'{c}_s11'].config.max_concurrent == 2
    program(two_host_flow()).validate()


def test_copies_share_the_start_event_and_its_delay():
    p = program(two_host_flow()).program
    assert 's1@h1_start' not in p.events and cond(p, 's1_start') is None
    assert [(a.target, a.delay) for a in p.assocs['s1_start']] == [('s1@h1', 0.5), ('s1@h2', 0.5)]
    assert p.initial == [('s1_start', (1,))]


def test_copies_of_a_container_inside_a_container_are_scoped_there():
    flow = new_flow()
    outer = flow.add_step('outer')
    box = outer.add_step('box', hosts=['h1', 'h2'])
    box.add_step('x')
    outer.add_step('after', requires=((box, C),))
    p = program(flow).program
    assert [s.name for s in p.step_list] == ['outer', 'outer_box@h1', 'outer_box@h1_x', 'outer_box@h2',
                                             'outer_box@h2_x', 'outer_after']
    assert p.steps['outer_box@h2'].scope == 'outer' and p.steps['outer_box@h2_x'].scope == 'outer_box@h2'
    assert p.steps['outer'].starts == ('outer_box_start',)
    assert [a.target for a in p.assocs['outer_box_start']] == ['outer_box@h1', 'outer_box@h2']
    assert hosts_of(p)['outer'] == () and hosts_of(p)['outer_box@h1_x'] == ('h1',)


def test_success_of_a_copied_container_is_success_of_every_copy():
    p = program(two_host_flow()).program
    assert cond(p, 's2_start') == And((Ref('s1@h1_success'), Ref('s1@h2_success')))
    assert {h: dict(p.steps[f's1@{h}'].triggers) for h in ('h1', 'h2')} == {
        'h1': {S: ('s1@h1_success',)}, 'h2': {S: ('s1@h2_success',)}}
    assert not [e for e in p.events if e.endswith(('_failure', '_ready', '_active'))]


def copied_required_with(status):
    flow = new_flow()
    box = flow.add_step('box', hosts=['h1', 'h2', 'h3'])
    box.add_step('x')
    flow.add_step('after', requires=((box, status),))
    return program(flow).program


def test_complete_of_a_copied_container_is_every_copy_completed():
    p = copied_required_with(C)
    assert cond(p, 'after_start') == And(tuple(
        Or((Ref(f'box@{h}_success'), Ref(f'box@{h}_failure'))) for h in ('h1', 'h2', 'h3')))
    assert dict(p.steps['box@h3'].triggers) == {S: ('box@h3_success',), F: ('box@h3_failure',)}


def test_failure_of_a_copied_container_is_every_copy_completed_and_one_failed():
    p = copied_required_with(F)
    hs = ('h1', 'h2', 'h3')
    completed = tuple(Or((Ref(f'box@{h}_success'), Ref(f'box@{h}_failure'))) for h in hs)
    assert cond(p, 'after_start') == And(completed + (Or(tuple(Ref(f'box@{h}_failure') for h in hs)),))
    for h in hs:  # the failure is handled on every copy
        assert dict(p.steps[f'box@{h}'].triggers) == {S: (f'box@{h}_success',), F: (f'box@{h}_failure',)}
        assert p.steps[f'box@{h}'].handles_failure


@pytest.mark.parametrize('status', [R, A], ids=['ready', 'active'])
def test_ready_or_active_of_a_copied_container_is_any_copy_reaching_it(status):
    p = copied_required_with(status)
    name = status.name
    assert cond(p, 'after_start') == Or(tuple(Ref(f'box@{h}_{name}') for h in ('h1', 'h2', 'h3')))
    assert set(p.events) == {'box_start', 'box@h1_x_start', 'box@h2_x_start', 'box@h3_x_start', 'after_start',
                             f'box@h1_{name}', f'box@h2_{name}', f'box@h3_{name}'}
    assert not p.steps['box@h1'].handles_failure


def test_copied_container_inside_or_and_with_other_requires():
    flow = new_flow()
    box = flow.add_step('box', hosts=['h1', 'h2'])
    box.add_step('x')
    a = flow.add_step('a')
    flow.add_step('after', requires=seq.or_((box, S), (a, F)))
    p = program(flow).program
    assert cond(p, 'after_start') == Or((And((Ref('box@h1_success'), Ref('box@h2_success'))), Ref('a_failure')))


def test_requires_of_a_copied_container_start_both_copies():
    flow = new_flow()
    a = flow.add_step('a')
    box = flow.add_step('box', hosts=['h1', 'h2'], requires=((a, S),))
    box.add_step('x')
    p = program(flow).program
    assert cond(p, 'box_start') == Ref('a_success')
    assert [x.target for x in p.assocs['box_start']] == ['box@h1', 'box@h2']
    assert p.initial == [('a_start', (1,))]


def test_pools_of_a_copied_container_apply_to_each_copy():
    pool = seq.ResourcePool('gpu', policy={'resource_limit': 4})
    flow = new_flow()
    box = flow.add_step('box', hosts=['h1', 'h2'], acquires=[(pool, 2)], releases=[(pool, 1)])
    box.add_step('x')
    p = program(flow).program
    for name in ('box@h1', 'box@h2'):
        assert p.steps[name].acquires == (('gpu', 2),) and p.steps[name].releases == (('gpu', 1),)
    assert list(p.pools) == ['gpu']


def test_copies_are_engine_names_only_the_flow_keeps_the_paths():
    flow = two_host_flow()
    program(flow)
    assert flow.step_at('s1_s11_s111').path == 's1_s11_s111'
    assert flow.step_at('s1@h1_s11') is None


def test_describe_shows_hosts():
    lines = list(describe(program(two_host_flow())))
    assert 'container s1@h1 [success->s1@h1_success] on h1' in lines
    assert 'step s1@h2_s11_s112 on h2' in lines
    assert 'step s2' in lines


def test_a_container_on_hosts_may_hold_no_step_with_hosts():
    flow = new_flow()
    box = flow.add_step('box', hosts=['h1'])
    inner = box.add_step('inner')
    with pytest.raises(seq.SequentError, match=r"step 'box_inner_x': Step ancestry has already assigned "
                                               r"host \('box'\)"):
        inner.add_step('x', hosts=['h1'])
    assert not inner.children


@pytest.mark.parametrize('hosts, message', [
    (['h1', 'h1'], "host 'h1' is named twice"),
    (['h1', 'h2', 'h1'], "host 'h1' is named twice"),
    ([''], 'must be a non-empty str'),
    ([5], 'must be a non-empty str'),
    ([None], 'must be a non-empty str'),
    (['h' * 256], 'the store keeps at most 255'),
    (['h\x00'], 'NUL'),
    (['h\n1'], 'control character'),
    (['h\t1'], 'control character'),
    (5, 'must be a list of host names'),
], ids=['duplicate', 'duplicate later', 'empty', 'int', 'None', 'too long', 'NUL', 'newline', 'tab', 'not a list'])
def test_bad_hosts_are_refused_naming_the_step(hosts, message):
    flow = new_flow()
    box = flow.add_step('box')
    with pytest.raises(seq.SequentError, match=re.escape(message)) as info:
        box.add_step('y', hosts=hosts)
    assert "step 'box_y'" in str(info.value)


def test_any_host_name_is_accepted_remote_ones_included():
    flow = new_flow()
    step = flow.add_step('a', hosts=['build-server.example.com', 'user@10.0.0.2', 'localhost'])
    assert step.hosts == ('build-server.example.com', 'user@10.0.0.2', 'localhost')
    assert flow.add_step('b', hosts=[]).hosts == ()
    assert flow.add_step('c', hosts=iter(['h'])).hosts == ('h',)


def test_copy_names_longer_than_the_store_keeps_are_refused_when_the_step_is_added():
    flow = new_flow()
    box = flow.add_step('box', hosts=['h1', 'h' * 250])
    with pytest.raises(seq.SequentError, match=r"step 'box_x'.*runs a copy on each of its hosts.*at most 255"):
        box.add_step('x')
    assert not box.children
    flow.add_step('other', hosts=['h' * 250]).add_step('x')  # one host: no copy, no longer name


def test_copy_names_that_clash_are_refused_naming_the_step():
    flow = new_flow()
    box = flow.add_step('box', hosts=['a', 'a_x'])
    box.add_step('x')  # box@a_x is both the step x of the copy on 'a' and the copy on 'a_x'
    with pytest.raises(seq.SequentError, match=r"step 'box'.*box@a_x.*rename the host or the step"):
        program(flow)


def test_engine_gets_a_tuple_of_hosts_for_processing_steps_and_one_host_for_containers():
    flow = two_host_flow()
    flow.add_step('solo', hosts=['h3', 'h4'])
    flow.add_step('one', hosts=['h5']).add_step('inside')
    ev = Eventor(name='t', store=':memory:', config={'task_construct': 'thread'})
    calls = []
    for method in ('add_step', 'add_container'):
        def spy(name, *args, _real=getattr(ev, method), _method=method, **kwargs):
            calls.append((_method, name, kwargs.get('host')))
            return _real(name, *args, **kwargs)
        setattr(ev, method, spy)
    translate(flow, ev)
    assert calls == [
        ('add_container', 's1@h1', 'h1'), ('add_container', 's1@h1_s11', 'h1'),
        ('add_step', 's1@h1_s11_s111', ('h1',)), ('add_step', 's1@h1_s11_s112', ('h1',)),
        ('add_step', 's1@h1_s12', ('h1',)),
        ('add_container', 's1@h2', 'h2'), ('add_container', 's1@h2_s11', 'h2'),
        ('add_step', 's1@h2_s11_s111', ('h2',)), ('add_step', 's1@h2_s11_s112', ('h2',)),
        ('add_step', 's1@h2_s12', ('h2',)),
        ('add_step', 's2', None), ('add_step', 'solo', ('h3', 'h4')),
        ('add_container', 'one', 'h5'), ('add_step', 'one_inside', ('h5',))]
