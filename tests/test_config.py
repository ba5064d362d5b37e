"""Tests of sequent.eventor.config: loading, tags, merging, expansion and validation."""

import copy
import logging
import os
import warnings

import pytest
from hypothesis import given, strategies as st

from sequent.eventor.config import (DEFAULTS, STEP_KEYS, HostSettings, host_settings, load_config, merge,
                                    validate_step_config)
from sequent.eventor.errors import ConfigError, ConfigWarning


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv('SEQUENT_CONFIG_TAG', raising=False)


def load_quiet(*args, **kwargs):
    """load_config with ConfigWarnings (unknown keys used as fixtures) silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', ConfigWarning)
        return load_config(*args, **kwargs)


# ------------------------------------------------------------------------------- sources

def test_no_config_gives_the_defaults_with_paths_expanded():
    config = load_config()
    assert config['max_concurrent'] == -1
    assert config['task_construct'] == 'process'
    assert config['LOGGING']['logging_level'] == logging.INFO
    assert config['LOGGING']['logdir'] == os.path.expanduser('~/log/sequent')
    assert config['ssh_config'] is None  # ssh's own configuration files (no -F)
    assert load_config({}) == config


def test_dict_config_overrides_defaults():
    config = load_config({'max_concurrent': 3, 'task_construct': 'thread'})
    assert config['max_concurrent'] == 3
    assert config['task_construct'] == 'thread'
    assert config['stop_on_exception'] is True


def test_yaml_file_given_as_str_path(tmp_path):
    path = tmp_path / 'conf.yaml'
    path.write_text('max_concurrent: 4\nLOGGING:\n  console: false\n')
    config = load_config(str(path))
    assert config['max_concurrent'] == 4
    assert config['LOGGING']['console'] is False


def test_yaml_file_given_as_pathlike(tmp_path):
    path = tmp_path / 'conf.yaml'
    path.write_text('debug: true\n')
    assert load_config(path)['debug'] is True


def test_relative_yaml_path_is_relative_to_cwd(tmp_path, monkeypatch):
    (tmp_path / 'rel.yaml').write_text('shared_db: true\n')
    monkeypatch.chdir(tmp_path)
    assert load_config('rel.yaml')['shared_db'] is True


def test_missing_pathlike_file_raises(tmp_path):
    with pytest.raises(ConfigError, match='missing.yaml'):
        load_config(tmp_path / 'missing.yaml')


def test_yaml_string_is_parsed():
    assert load_config('max_concurrent: 2\nssh_port: 2222')['ssh_port'] == 2222


def test_empty_yaml_string_gives_defaults():
    assert load_config('') == load_config()
    assert load_config('# only a comment\n') == load_config()


def test_empty_yaml_file_gives_defaults(tmp_path):
    path = tmp_path / 'empty.yaml'
    path.write_text('')
    assert load_config(path) == load_config()


def test_bare_word_that_is_no_file_raises_naming_the_value():
    with pytest.raises(ConfigError, match=r"neither an existing YAML file nor a YAML mapping: 'myconf\.yaml'"):
        load_config('myconf.yaml')


def test_yaml_list_string_is_not_a_mapping():
    with pytest.raises(ConfigError, match='neither an existing YAML file nor a YAML mapping'):
        load_config('- a\n- b\n')


def test_yaml_file_holding_a_list_raises(tmp_path):
    path = tmp_path / 'list.yaml'
    path.write_text('- 1\n')
    with pytest.raises(ConfigError, match='does not hold a YAML mapping'):
        load_config(path)


def test_yaml_syntax_error_raises_config_error_with_yaml_message():
    with pytest.raises(ConfigError, match='invalid YAML') as info:
        load_config('a: [1, 2\nb: 3')
    assert 'line' in str(info.value)


def test_unsupported_config_type_raises():
    with pytest.raises(ConfigError, match='config must be'):
        load_config(42)


# ------------------------------------------------------------------------------- tags

NESTED = {'SEQUENT': {'max_concurrent': 2, 'INNER': {'max_concurrent': 7}}, 'OTHER': {'debug': True}}


def test_tag_selects_sub_tree():
    config = load_config(NESTED, 'SEQUENT.INNER')
    assert config['max_concurrent'] == 7
    assert 'SEQUENT' not in config and 'OTHER' not in config


def test_top_level_tag_selects_sub_tree():
    assert load_quiet(NESTED, 'SEQUENT')['max_concurrent'] == 2


def test_tag_works_on_yaml_string():
    assert load_config('A:\n  B:\n    debug: true\n', 'A.B')['debug'] is True


def test_missing_tag_names_tag_and_available_keys():
    with pytest.raises(ConfigError) as info:
        load_config(NESTED, 'SEQUENT.NOPE')
    text = str(info.value)
    assert "'SEQUENT.NOPE'" in text and "'NOPE'" in text
    assert "'max_concurrent'" in text and "'INNER'" in text


def test_missing_top_level_tag_lists_top_level_keys():
    with pytest.raises(ConfigError, match="'SEQUENT', 'OTHER'"):
        load_config(NESTED, 'X')


def test_tag_to_non_mapping_raises():
    with pytest.raises(ConfigError, match='not select a mapping'):
        load_config(NESTED, 'SEQUENT.max_concurrent')


def test_tag_through_non_mapping_raises():
    with pytest.raises(ConfigError, match='not a mapping'):
        load_config(NESTED, 'SEQUENT.max_concurrent.x')


def test_env_tag_used_when_tag_is_none(monkeypatch):
    monkeypatch.setenv('SEQUENT_CONFIG_TAG', 'SEQUENT.INNER')
    assert load_config(NESTED)['max_concurrent'] == 7


def test_env_tag_ignored_when_tag_is_given(monkeypatch):
    monkeypatch.setenv('SEQUENT_CONFIG_TAG', 'SEQUENT.INNER')
    assert load_config(NESTED, 'OTHER')['debug'] is True
    assert load_quiet(NESTED, '')['max_concurrent'] == -1  # '' means no tag, env not consulted


def test_env_tag_variable_name_is_configurable(monkeypatch):
    monkeypatch.setenv('MY_TAG', 'OTHER')
    assert load_config(NESTED, env_tag_var='MY_TAG')['debug'] is True


def test_env_tag_not_applied_without_config(monkeypatch):
    monkeypatch.setenv('SEQUENT_CONFIG_TAG', 'SEQUENT')
    assert load_config(None)['max_concurrent'] == -1


# ------------------------------------------------------------------------------- merging

def test_nested_logging_merged_per_key():
    config = load_config({'LOGGING': {'console': False}})
    assert config['LOGGING']['console'] is False
    assert config['LOGGING']['file_mode'] == 'a'
    assert config['LOGGING']['logging_level'] == logging.INFO


def test_merge_over_wins_and_merges_nested():
    base = {'a': 1, 'n': {'x': 1, 'y': 2}, 'l': [1]}
    over = {'a': 2, 'n': {'y': 3, 'z': 4}, 'b': 5}
    assert merge(base, over) == {'a': 2, 'n': {'x': 1, 'y': 3, 'z': 4}, 'l': [1], 'b': 5}


def test_merge_non_mapping_replaces_mapping():
    assert merge({'n': {'x': 1}}, {'n': None}) == {'n': None}
    assert merge({'n': 1}, {'n': {'x': 1}}) == {'n': {'x': 1}}


def test_merge_never_mutates_or_shares_inputs():
    base = {'n': {'x': [1]}}
    over = {'n': {'y': {'z': 1}}}
    saved = copy.deepcopy((base, over))
    out = merge(base, over)
    out['n']['x'].append(2)
    out['n']['y']['z'] = 9
    assert (base, over) == saved


trees = st.dictionaries(st.sampled_from('abcd'), st.recursive(
    st.integers(0, 9), lambda inner: st.dictionaries(st.sampled_from('abc'), inner, max_size=3), max_leaves=8),
    max_size=4)


@given(trees, trees)
def test_merge_is_per_key_with_over_winning(base, over):
    out = merge(base, over)
    assert set(out) == set(base) | set(over)
    for key, value in out.items():
        if key not in over:
            assert value == base[key]
        elif isinstance(over[key], dict) and isinstance(base.get(key), dict):
            assert value == merge(base[key], over[key])
        else:
            assert value == over[key]
    assert merge(out, over) == out  # applying over again changes nothing
    assert merge(base, {}) == base and merge({}, over) == over


def test_load_config_does_not_mutate_input_or_defaults():
    user = {'LOGGING': {'logging_level': 'debug', 'logdir': '~/x'}, 'HOSTS': {'h': 'host1'}}
    saved_user, saved_defaults = copy.deepcopy(user), copy.deepcopy(DEFAULTS)
    config = load_config(user)
    config['LOGGING']['console'] = False
    config['HOSTS']['g'] = 'host2'
    config['DATABASES']['x'] = {}
    assert user == saved_user
    assert DEFAULTS == saved_defaults


def test_custom_defaults_are_used():
    defaults = merge(DEFAULTS, {'envvar_prefix': 'EVENTOR_'})
    assert load_config({}, defaults=defaults)['envvar_prefix'] == 'EVENTOR_'


# ------------------------------------------------------------------------------- expansion

def test_tilde_expanded(monkeypatch):
    monkeypatch.setenv('HOME', '/home/tester')
    assert load_config({'workdir': '~/work'})['workdir'] == '/home/tester/work'


def test_env_vars_expanded_both_forms(monkeypatch):
    monkeypatch.setenv('SEQ_TEST_DIR', '/data')
    config = load_config({'workdir': '$SEQ_TEST_DIR/a', 'LOGGING': {'logdir': '${SEQ_TEST_DIR}x/log'}})
    assert config['workdir'] == '/data/a'
    assert config['LOGGING']['logdir'] == '/datax/log'


def test_unknown_env_var_left_as_is(monkeypatch):
    monkeypatch.delenv('SEQ_TEST_UNSET', raising=False)
    assert load_config({'workdir': '$SEQ_TEST_UNSET/a'})['workdir'] == '$SEQ_TEST_UNSET/a'


def test_strings_inside_lists_expanded(monkeypatch):
    monkeypatch.setenv('SEQ_TEST_V', 'v')
    config = load_quiet({'extra': ['$SEQ_TEST_V', {'k': '${SEQ_TEST_V}2'}, 3]})
    assert config['extra'] == ['v', {'k': 'v2'}, 3]


def test_reference_interpolated_into_string():
    config = load_config({'workdir': '/w', 'LOGGING': {'logdir': '$[workdir]/logs'}})
    assert config['LOGGING']['logdir'] == '/w/logs'


def test_reference_to_nested_key_and_non_str_interpolation():
    config = load_config({'workdir': '/run/$[LOGGING.interval]/$[ssh_port]', 'LOGGING': {'interval': 3}})
    assert config['workdir'] == '/run/3/22'


def test_whole_string_reference_keeps_type():
    config = load_config({'ssh_port': 2200, 'LOGGING': {'maxBytes': '$[ssh_port]', 'utc': '$[debug]'}})
    assert config['LOGGING']['maxBytes'] == 2200
    assert config['LOGGING']['utc'] is False


def test_reference_is_expanded_recursively(monkeypatch):
    monkeypatch.setenv('SEQ_TEST_ROOT', '/r')
    config = load_config({'workdir': '$SEQ_TEST_ROOT/w', 'ssh_config': '$[LOGGING.logdir]/ssh',
                          'LOGGING': {'logdir': '$[workdir]/log'}})
    assert config['ssh_config'] == '/r/w/log/ssh'


def test_reference_to_defaulted_key_sees_expanded_default(monkeypatch):
    monkeypatch.setenv('HOME', '/home/tester')
    assert load_config({'workdir': '$[LOGGING.logdir]'})['workdir'] == '/home/tester/log/sequent'


def test_missing_reference_names_both_keys():
    with pytest.raises(ConfigError) as info:
        load_config({'LOGGING': {'logdir': '$[NOPE.x]/l'}})
    assert "'LOGGING.logdir'" in str(info.value) and "'NOPE.x'" in str(info.value)


def test_reference_cycle_raises():
    with pytest.raises(ConfigError, match='cycle'):
        load_config({'workdir': '$[ssh_config]', 'ssh_config': 'x$[workdir]'})


def test_self_reference_raises():
    with pytest.raises(ConfigError, match='cycle'):
        load_config({'workdir': '$[workdir]'})


def test_reference_to_enclosing_mapping_raises():
    with pytest.raises(ConfigError, match='cycle'):
        load_config({'LOGGING': {'logdir': '$[LOGGING]'}})


def test_env_value_is_not_scanned_for_references(monkeypatch):
    monkeypatch.setenv('SEQ_TEST_REF', '$[nope]')
    assert load_config({'workdir': '$SEQ_TEST_REF'})['workdir'] == '$[nope]'


# ------------------------------------------------------------------------------- validation

def test_unknown_key_warns_with_dotted_path_and_is_kept():
    with pytest.warns(ConfigWarning, match="unknown configuration key 'LOGGING.loglevel' is ignored"):
        config = load_config({'LOGGING': {'loglevel': 'DEBUG'}})
    assert config['LOGGING']['loglevel'] == 'DEBUG'


def test_unknown_top_level_key_warns():
    with pytest.warns(ConfigWarning, match="'max_concurent'"):
        load_config({'max_concurent': 2})


def test_unknown_key_warning_points_at_the_caller():
    with pytest.warns(ConfigWarning) as record:
        load_config({'typo': 1})
    assert record[0].filename == __file__


def test_known_keys_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        load_config({'LOGGING': {'when': 'midnight', 'atTime': '01:30'}, 'DATABASES': {'d': {'dialect': 'sqlite'}}})


@pytest.mark.parametrize('key, value, expected', [
    ('max_concurrent', 'two', 'an int'),
    ('max_concurrent', True, 'an int'),
    ('max_concurrent', 1.5, 'an int'),
    ('stop_on_exception', 'yes', 'a bool'),
    ('debug', 0, 'a bool'),
    ('sleep_between_loops', -1, 'a number >= 0'),
    ('sleep_between_loops', False, 'a number >= 0'),
    ('task_construct', 'proc', "one of 'process', 'thread', 'invoke', 'dask'"),
    ('sequence_arg_name', 'not valid', 'a valid Python identifier or None'),
    ('sequence_arg_name', 'class', 'a valid Python identifier or None'),
    ('ssh_port', 0, 'an int between 1 and 65535'),
    ('ssh_port', 70000, 'an int between 1 and 65535'),
    ('ssh_host', 5, 'a str or None'),
    ('workdir', None, 'a str'),
    ('envvar_prefix', 1, 'a str'),
    ('day_to_keep_db', '5', 'an int'),
    ('DATABASES', [], 'a mapping'),
    ('HOSTS', 'h', 'a mapping'),
    ('LOGGING', 'x', 'a mapping'),
])
def test_wrong_type_names_key_expected_and_got(key, value, expected):
    with pytest.raises(ConfigError) as info:
        load_config({key: value})
    assert str(info.value) == f'configuration key {key!r}: expected {expected}, got {value!r} ({type(value).__name__})'


def test_wrong_type_message_exact_example():
    with pytest.raises(ConfigError, match=r"^configuration key 'max_concurrent': expected an int, got 'two' \(str\)$"):
        load_config({'max_concurrent': 'two'})


@pytest.mark.parametrize('key, value', [
    ('logdir', 3), ('console', 'no'), ('file_mode', None), ('maxBytes', -1), ('backupCount', 1.0),
    ('when', 1), ('interval', 0), ('utc', 1), ('atTime', '25:00'), ('atTime', '1:2'), ('delay', None),
    ('logging_level', 'LOUD'), ('logging_level', -5), ('logging_level', True),
])
def test_wrong_logging_value_names_dotted_key(key, value):
    with pytest.raises(ConfigError, match=rf"configuration key 'LOGGING\.{key}': expected"):
        load_config({'LOGGING': {key: value}})


@pytest.mark.parametrize('value, level', [('DEBUG', 10), ('debug', 10), ('Warning', 30), (15, 15), (0, 0)])
def test_logging_level_normalised_to_int(value, level):
    assert load_config({'LOGGING': {'logging_level': value}})['LOGGING']['logging_level'] == level


def test_valid_values_are_accepted():
    config = load_config({'sleep_between_loops': 0, 'sequence_arg_name': 'seq', 'ssh_host': 'h', 'ssh_port': 65535,
                          'HOSTS': {'web': 'web1.example'},
                          'LOGGING': {'when': 'h', 'atTime': '23:59:59', 'maxBytes': 10, 'interval': 2}})
    assert config['sequence_arg_name'] == 'seq'
    assert config['LOGGING']['atTime'] == '23:59:59'


def test_database_entry_must_be_mapping():
    with pytest.raises(ConfigError, match=r"'DATABASES\.pg': expected a mapping"):
        load_config({'DATABASES': {'pg': 'postgresql://x'}})


def test_database_entry_needs_dialect():
    with pytest.raises(ConfigError, match=r"'DATABASES\.pg'.*dialect"):
        load_config({'DATABASES': {'pg': {'host': 'h'}}})


def test_database_dialect_must_be_str():
    with pytest.raises(ConfigError, match=r"'DATABASES\.pg\.dialect': expected a str"):
        load_config({'DATABASES': {'pg': {'dialect': 5}}})


def test_database_entries_pass_through_loosely():
    entry = {'dialect': 'postgresql', 'host': 'h', 'port': 5432, 'pool_size': 3}
    assert load_config({'DATABASES': {'pg': entry}})['DATABASES']['pg'] == entry


def test_hosts_values_must_be_str_or_mapping():
    with pytest.raises(ConfigError, match=r"'HOSTS\.web': expected a str \(the ssh destination\) or a mapping"):
        load_config({'HOSTS': {'web': 1}})


def test_type_checked_after_expansion(monkeypatch):
    monkeypatch.setenv('SEQ_TEST_N', '3')
    with pytest.raises(ConfigError, match="'max_concurrent': expected an int, got '3'"):
        load_config({'max_concurrent': '$SEQ_TEST_N'})


# ------------------------------------------------------------------------------- step config

def test_step_config_none_is_empty():
    assert validate_step_config(None, 's1') == {}


def test_step_config_returns_recognised_keys():
    config = {'task_construct': 'thread', 'max_concurrent': 2, 'stop_on_exception': False,
              'sequence_arg_name': 'seq', 'pass_logger_to_task': True, 'item_arg_name': 'path',
              'parallel_iterations': 4, 'retries': 2, 'retry_delay': 0.5, 'retry_backoff': 2, 'timeout': None}
    assert set(config) == STEP_KEYS
    result = validate_step_config(config, 's1')
    assert result == config and result is not config


def test_step_config_unknown_key_warns_naming_step_and_dropped():
    with pytest.warns(ConfigWarning, match=r"step 's1_s2'.*'max_concurent'"):
        result = validate_step_config({'max_concurent': 2, 'task_construct': 'thread'}, 's1_s2')
    assert result == {'task_construct': 'thread'}


def test_step_config_flow_only_key_warns():
    with pytest.warns(ConfigWarning, match="'LOGGING'"):
        assert validate_step_config({'LOGGING': {}}, 's1') == {}


def test_step_config_error_names_step_and_key():
    with pytest.raises(ConfigError, match=r"^step 's1_s2': configuration key 'task_construct': "
                                          r"expected one of 'process', 'thread', 'invoke', 'dask', got 'proc'"):
        validate_step_config({'task_construct': 'proc'}, 's1_s2')


@pytest.mark.parametrize('key, value', [('max_concurrent', 'x'), ('stop_on_exception', 1),
                                        ('sequence_arg_name', '1a'), ('pass_logger_to_task', None)])
def test_step_config_type_errors(key, value):
    with pytest.raises(ConfigError, match=rf"step 'st': configuration key '{key}'"):
        validate_step_config({key: value}, 'st')


def test_step_config_not_a_mapping_names_step():
    with pytest.raises(ConfigError, match="step 'st'"):
        validate_step_config(['thread'], 'st')


# ------------------------------------------------------------------------------- modes and the store

def test_new_keys_have_their_defaults():
    config = load_config()
    assert config['busy_timeout'] == 10.0 and config['store_mode'] == 0o600
    assert config['LOGGING']['logdir_mode'] == 0o700 and config['LOGGING']['logfile_mode'] == 0o600


def test_logging_defaults_of_config_and_logs_agree():
    from sequent.eventor import logs

    assert DEFAULTS['LOGGING'] == logs.DEFAULTS


@pytest.mark.parametrize('value, mode', [
    (0o640, 0o640), (0, 0), (0o777, 0o777), ('0640', 0o640), ('0o640', 0o640), ('0O750', 0o750),
    ('640', 0o640), ('0', 0), ('00600', 0o600),
])
@pytest.mark.parametrize('where', ['store_mode', 'LOGGING.logdir_mode', 'LOGGING.logfile_mode'])
def test_mode_keys_accept_ints_and_octal_strings(where, value, mode):
    *outer, key = where.split('.')
    user = {outer[0]: {key: value}} if outer else {key: value}
    config = load_config(user)
    assert (config[outer[0]] if outer else config)[key] == mode


def test_mode_written_as_octal_in_yaml_is_read_as_its_int():
    config = load_config('store_mode: 0640\nLOGGING:\n  logfile_mode: "0o600"\n  logdir_mode: 0750\n')
    assert config['store_mode'] == 0o640
    assert (config['LOGGING']['logfile_mode'], config['LOGGING']['logdir_mode']) == (0o600, 0o750)


@pytest.mark.parametrize('value', [0o1000, 640, -1, True, None, 6.4, '0o8', '1777', '0x1ff', 'rw-------', ''])
@pytest.mark.parametrize('where', ['store_mode', 'LOGGING.logdir_mode', 'LOGGING.logfile_mode'])
def test_bad_mode_names_the_key(where, value):
    *outer, key = where.split('.')
    user = {outer[0]: {key: value}} if outer else {key: value}
    with pytest.raises(ConfigError) as info:
        load_config(user)
    assert str(info.value) == (f"configuration key {where!r}: expected a permission mode (an int 0..0o777 or "
                               f"an octal string like '0640' or '0o640'), got {value!r} ({type(value).__name__})")


@pytest.mark.parametrize('value', [0, 2, 0.5, 30.0])
def test_busy_timeout_accepts_numbers(value):
    assert load_config({'busy_timeout': value})['busy_timeout'] == value


@pytest.mark.parametrize('value', [-1, -0.1, '10', None, True])
def test_bad_busy_timeout_names_the_key(value):
    with pytest.raises(ConfigError, match=r"^configuration key 'busy_timeout': expected a number >= 0, got "):
        load_config({'busy_timeout': value})


# ------------------------------------------------------------------------------- remote hosts

def test_remote_host_defaults():
    config = load_config()
    assert (config['ssh_config'], config['ssh_alive_interval'], config['ssh_alive_count'],
            config['ssh_connect_timeout'], config['agent_wait'], config['HOSTS']) == (None, 5, 3, 10, 60, {})


def test_remote_host_keys_are_known_and_accept_good_values():
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        config = load_config({'ssh_config': '~/ssh/cfg', 'ssh_alive_interval': 0.5, 'ssh_alive_count': 1,
                              'ssh_connect_timeout': 2.5, 'agent_wait': 0})
    assert config['ssh_config'] == os.path.expanduser('~/ssh/cfg')
    assert (config['ssh_alive_interval'], config['ssh_alive_count'], config['ssh_connect_timeout'],
            config['agent_wait']) == (0.5, 1, 2.5, 0)


def test_a_missing_ssh_config_file_is_not_a_configuration_error(tmp_path):
    assert load_config({'ssh_config': str(tmp_path / 'absent')})['ssh_config'] == str(tmp_path / 'absent')


@pytest.mark.parametrize('key, value, expected', [
    ('ssh_config', 5, 'a str or None'),
    ('ssh_alive_interval', 0, 'a number > 0'),
    ('ssh_alive_interval', -1, 'a number > 0'),
    ('ssh_alive_interval', '5', 'a number > 0'),
    ('ssh_alive_interval', True, 'a number > 0'),
    ('ssh_alive_count', 0, 'an int >= 1'),
    ('ssh_alive_count', 2.0, 'an int >= 1'),
    ('ssh_connect_timeout', 0, 'a number > 0'),
    ('ssh_connect_timeout', None, 'a number > 0'),
    ('agent_wait', -0.1, 'a number >= 0'),
    ('agent_wait', 'long', 'a number >= 0'),
])
def test_remote_host_keys_wrong_values_name_key_and_expected(key, value, expected):
    with pytest.raises(ConfigError) as info:
        load_config({key: value})
    assert str(info.value) == f'configuration key {key!r}: expected {expected}, got {value!r} ({type(value).__name__})'


FULL_HOST = {'host': 'h1.example', 'python': '/opt/venv/bin/python', 'env': {'PYTHONPATH': '/srv/lib', 'X': ''},
             'workdir': '/srv/work', 'max_concurrent': 4}


def test_hosts_take_str_destinations_and_mappings_of_host_keys():
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        config = load_config({'HOSTS': {'h1': FULL_HOST, 'h2': 'batch@h2.example', 'h3': {}}})
    assert config['HOSTS'] == {'h1': FULL_HOST, 'h2': 'batch@h2.example', 'h3': {}}


@pytest.mark.parametrize('entry, key, message', [
    ({'pyhton': 'python3'}, 'HOSTS.h1.pyhton', 'is not known: a host takes env, host, max_concurrent, python, '
                                               'workdir'),
    ({'host': 'h', 'ports': 22}, 'HOSTS.h1.ports', 'is not known'),
    ({'host': 5}, 'HOSTS.h1.host', 'must be a non-empty str'),
    ({'host': ''}, 'HOSTS.h1.host', 'must be a non-empty str'),
    ({'host': 'a\nb'}, 'HOSTS.h1.host', 'control character'),
    ({'python': None}, 'HOSTS.h1.python', 'must be a non-empty str'),
    ({'workdir': 3}, 'HOSTS.h1.workdir', 'must be a non-empty str'),
    ({'max_concurrent': '2'}, 'HOSTS.h1.max_concurrent', 'expected an int'),
    ({'max_concurrent': 1.5}, 'HOSTS.h1.max_concurrent', 'expected an int'),
    ({'max_concurrent': True}, 'HOSTS.h1.max_concurrent', 'expected an int'),
    ({'env': ['A=1']}, 'HOSTS.h1.env', 'expected a mapping'),
    ({'env': {'A': 1}}, 'HOSTS.h1.env.A', 'expected a str without NUL'),
    ({'env': {'A': 'x\0y'}}, 'HOSTS.h1.env.A', 'expected a str without NUL'),
    ({'env': {'A=B': 'x'}}, 'HOSTS.h1.env.A=B', 'expected an environment variable name'),
    ({'env': {'': 'x'}}, 'HOSTS.h1.env.', 'expected an environment variable name'),
    ('', 'HOSTS.h1', 'must be a non-empty str'),
    ('-oProxyCommand=x', 'HOSTS.h1', "starts with '-'"),
    ({'host': '-oProxyCommand=x'}, 'HOSTS.h1.host', "starts with '-'"),
    (None, 'HOSTS.h1', 'expected a str (the ssh destination) or a mapping of host settings'),
    (['h1.example'], 'HOSTS.h1', 'expected a str (the ssh destination) or a mapping of host settings'),
])
def test_bad_host_entries_name_the_key_path(entry, key, message):
    with pytest.raises(ConfigError) as info:
        load_config({'HOSTS': {'h1': entry}})
    assert str(info.value).startswith(f'configuration key {key!r}')
    assert message in str(info.value)


@pytest.mark.parametrize('name', [5, '', 'a\tb'])
def test_bad_host_names_are_refused(name):
    with pytest.raises(ConfigError, match=r"configuration key 'HOSTS\..*expected a host name"):
        load_config({'HOSTS': {name: 'h.example'}})


def test_host_entries_expand_like_other_values(monkeypatch):
    monkeypatch.setenv('SEQ_TEST_LIB', '/srv/lib')
    config = load_config({'HOSTS': {'h1': {'env': {'PYTHONPATH': '$SEQ_TEST_LIB:/x'}, 'host': '$[ssh_host]'}},
                          'ssh_host': 'gateway'})
    assert config['HOSTS']['h1'] == {'env': {'PYTHONPATH': '/srv/lib:/x'}, 'host': 'gateway'}


def test_host_settings_of_a_full_entry():
    config = load_config({'HOSTS': {'h1': FULL_HOST}})
    assert host_settings('h1', config) == HostSettings(
        name='h1', destination='h1.example', python='/opt/venv/bin/python',
        env={'PYTHONPATH': '/srv/lib', 'X': ''}, workdir='/srv/work', max_concurrent=4)


def test_host_settings_of_a_str_entry_is_its_destination():
    config = load_config({'HOSTS': {'h2': 'batch@h2.example'}})
    assert host_settings('h2', config) == HostSettings(name='h2', destination='batch@h2.example',
                                                       python='python3', env={}, workdir=None, max_concurrent=None)


@pytest.mark.parametrize('hosts', [{}, {'other': 'x'}, {'h': {}}, {'h': {'max_concurrent': None}}],
                         ids=['no HOSTS', 'not listed', 'empty mapping', 'limit None'])
def test_host_settings_defaults(hosts):
    settings = host_settings('h', load_config({'HOSTS': hosts}))
    assert settings == HostSettings(name='h', destination='h', python='python3', env={}, workdir=None,
                                    max_concurrent=None)


def test_host_settings_of_a_config_without_hosts_key():
    assert host_settings('h', {}).destination == 'h'


@pytest.mark.parametrize('limit, expected', [(0, None), (-1, None), (1, 1), (8, 8)])
def test_host_settings_max_concurrent_below_one_means_no_limit(limit, expected):
    config = load_config({'HOSTS': {'h': {'max_concurrent': limit}}})
    assert host_settings('h', config).max_concurrent == expected


def test_host_settings_destination_defaults_to_the_name_in_a_mapping():
    assert host_settings('h', load_config({'HOSTS': {'h': {'python': 'python3.11'}}})).destination == 'h'


def test_host_settings_are_frozen_hashable_and_own_their_env():
    config = load_config({'HOSTS': {'h1': FULL_HOST}})
    settings = host_settings('h1', config)
    with pytest.raises(AttributeError):
        settings.python = 'python2'
    hash(settings)
    settings.env['NEW'] = '1'
    assert 'NEW' not in config['HOSTS']['h1']['env']
    assert 'NEW' not in host_settings('h1', config).env


def test_host_settings_of_an_unlisted_name_that_ssh_would_take_for_an_option():
    with pytest.raises(ConfigError, match=r"'HOSTS\.-x\.host'.*starts with '-'"):
        host_settings('-x', {})
    assert host_settings('-x', {'HOSTS': {'-x': 'safe.example'}}).destination == 'safe.example'


def test_host_settings_checks_an_unloaded_config_too():
    with pytest.raises(ConfigError, match=r"'HOSTS\.h\.pyhton' is not known"):
        host_settings('h', {'HOSTS': {'h': {'pyhton': 'python3'}}})
    with pytest.raises(ConfigError, match='host name'):
        host_settings('', {})
