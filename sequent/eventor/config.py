"""Configuration: load a dict, YAML file or YAML string, merge it over the defaults, expand and check it.

String values expand ``~``, ``$VAR``/``${VAR}`` (environment) and ``$[A.B.C]`` (another key of the
merged config).  Known keys are type-checked by a small table of validators; unknown keys are kept
but reported with a :class:`ConfigWarning`, since they are most likely typos.
"""

from __future__ import annotations

import keyword
import logging
import os
import re
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import yaml

from .errors import ConfigError, ConfigWarning
from .text import name_problem

__all__ = ['DEFAULTS', 'LOGGING_DEFAULTS', 'STEP_KEYS', 'HOST_KEYS', 'HostSettings', 'load_config',
           'validate_step_config', 'merge', 'host_settings', 'permission_mode', 'caller_outside_package']

#: The LOGGING section's defaults; the one source of ``logs.DEFAULTS`` too.
LOGGING_DEFAULTS: dict = {
    'logdir': '~/log/sequent',
    'logging_level': logging.INFO,
    # console: True writes the run's lines to stdout, down to console_level; False writes none there,
    # and a run that did not succeed then writes only its summary, to stderr (what cron mails)
    'console': True,
    # the lowest level of the lines on stdout: a level, or 'auto': logging_level when stdout is a
    # terminal, WARNING otherwise (cron, a pipe); the run's summary is always written
    'console_level': 'auto',
    # a live line of the run's progress (done, running, waiting, failed, iterations), on a terminal
    # only (stdout a tty and console True); never in a file
    'progress': True,
    'file_prefix': '',
    'file_suffix': '',
    'file_mode': 'a',
    'encoding': 'utf8',
    'maxBytes': 0,
    'backupCount': 0,
    'when': None,
    'interval': 1,
    'utc': False,
    'atTime': None,
    'delay': False,
    'logdir_mode': 0o700,  # permission bits of a log folder sequent creates (less the umask)
    'logfile_mode': 0o600,  # permission bits of a log file sequent creates (less the umask)
}

# Keys marked "not used" are checked and kept, so configurations written for the original
# still load without warnings, but nothing reads them.
DEFAULTS: dict = {
    'envvar_prefix': 'SEQUENT_',
    'workdir': '/tmp',  # accepted for compatibility, not used
    'debug': False,  # accepted for compatibility, not used
    'sleep_between_loops': 0.25,  # accepted for compatibility, not used: the engine does not poll
    'stop_on_exception': True,
    'shutdown_grace': 10.0,
    'task_construct': 'process',
    'max_concurrent': -1,
    'sequence_arg_name': None,
    'pass_logger_to_task': False,
    'item_arg_name': None,  # a step inside a repeated container gets its item as this keyword argument
    'parallel_iterations': 1,  # a container's iterations at once (0: no limit); not passed down to inner containers
    'retries': 0,  # a failed task is tried again this many more times
    'retry_delay': 0,  # seconds before the first retry
    'retry_backoff': 1,  # the delay is multiplied by this after each retry
    'timeout': None,  # seconds a try may run before it is stopped (process tasks; None: no limit)
    'shared_db': False,  # accepted for compatibility, not used
    'ssh_config': None,  # the ssh client's configuration file (ssh -F); None: ssh's own (~/.ssh/config ...)
    'ssh_host': None,  # accepted for compatibility, not used
    'ssh_port': 22,  # accepted for compatibility, not used
    'ssh_alive_interval': 5,  # seconds between keepalives on an agent's ssh link
    'ssh_alive_count': 3,  # keepalives left unanswered before an agent's link is declared dead
    'ssh_connect_timeout': 10,  # seconds ssh waits for a host to accept the connection
    'agent_wait': 60,  # seconds a recovery waits for agents of the run's earlier attempt still running
    'day_to_keep_db': 5,  # accepted for compatibility, not used
    'remote_method': 'ssh',  # accepted for compatibility, not used
    'busy_timeout': 10.0,  # seconds the store waits for a locked database before failing
    'store_mode': 0o600,  # permission bits of a new SQLite store file (less the umask)
    'DATABASES': {},
    'HOSTS': {},  # host name -> ssh destination (str), or a mapping of HOST_KEYS: see host_settings()
    # task_construct 'dask': the scheduler's address (None: a local cluster for the run) and the
    # keyword arguments of distributed.Client
    'DASK': {'address': None, 'options': {}},
    'LOGGING': LOGGING_DEFAULTS,  # shared, never changed: merge() copies it
}

STEP_KEYS: frozenset = frozenset(
    {'task_construct', 'max_concurrent', 'stop_on_exception', 'sequence_arg_name', 'pass_logger_to_task',
     'item_arg_name', 'parallel_iterations', 'retries', 'retry_delay', 'retry_backoff', 'timeout'})


# ----------------------------------------------------------------------------------- merging

def _copy(value: Any) -> Any:
    """Copy mappings and lists deeply (as dicts and lists); other values are shared."""
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def merge(base: Mapping, over: Mapping) -> dict:
    """Deep-merge ``over`` onto ``base`` (``over`` wins, nested mappings merged per key).

    Returns new dicts and never mutates its inputs, so DEFAULTS stay pristine.
    """
    out = _copy(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = _copy(value)
    return out


# ----------------------------------------------------------------------------------- validators
# A validator takes (value, dotted key) and returns the (possibly normalised) value or raises.

Validator = Callable[[Any, str], Any]


def _got(value: Any) -> str:
    return f'{value!r} ({type(value).__name__})'


def _fail(key: str, expected: str, value: Any) -> None:
    raise ConfigError(f'configuration key {key!r}: expected {expected}, got {_got(value)}')


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(test: Callable[[Any], bool], expected: str) -> Validator:
    def validate(value: Any, key: str) -> Any:
        if not test(value):
            _fail(key, expected, value)
        return value
    return validate


def _int(lo: int | None = None, hi: int | None = None) -> Validator:
    expected = ('an int' if lo is None else f'an int >= {lo}' if hi is None
                else f'an int between {lo} and {hi}')
    return _check(lambda v: _is_int(v) and (lo is None or v >= lo) and (hi is None or v <= hi), expected)


def _choice(*choices: str) -> Validator:
    return _check(lambda v: v in choices, 'one of ' + ', '.join(map(repr, choices)))


def logging_level(value: Any, key: str) -> int:
    """A logging level: an int >= 0 or a level name in any case, normalised to the int."""
    if _is_int(value) and value >= 0:
        return value
    if isinstance(value, str):
        level = logging.getLevelName(value.upper())  # int for a known name, else 'Level X'
        if _is_int(level):
            return level
    _fail(key, 'a logging level (an int or a name like DEBUG, INFO, WARNING)', value)


def _console_level(value: Any, key: str) -> Any:
    """'auto' (whatever its case), or a logging level normalised to the int."""
    if isinstance(value, str) and value.lower() == 'auto':
        return 'auto'
    if _is_int(value) or isinstance(value, str):
        try:
            return logging_level(value, key)
        except ConfigError:
            pass
    _fail(key, "'auto' or a logging level (an int or a name like INFO, WARNING)", value)


def _at_time(value: Any, key: str) -> Any:
    match = isinstance(value, str) and re.fullmatch(r'(\d{1,2}):(\d{2})(?::(\d{2}))?', value)
    if value is None or (match and int(match[1]) < 24 and int(match[2]) < 60 and int(match[3] or 0) < 60):
        return value
    _fail(key, "a time 'HH:MM[:SS]' or None", value)


_MODE_TEXT = re.compile(r'(?:0[oO])?0*([0-7]{1,3})')


def permission_mode(value: Any, key: str) -> int:
    """Permission bits for a file or folder sequent creates: an int 0..0o777 or an octal string, as the int."""
    # YAML 1.1 reads 0640 as the int 416 already; a string is always octal: '0640', '0o640', '640'.
    # The process umask still removes bits when the file is created (it can never add any).
    if _is_int(value) and 0 <= value <= 0o777:
        return value
    match = isinstance(value, str) and _MODE_TEXT.fullmatch(value)
    if match:
        return int(match[1], 8)
    _fail(key, "a permission mode (an int 0..0o777 or an octal string like '0640' or '0o640')", value)


def _mapping(value: Any, key: str) -> Mapping:
    if not isinstance(value, Mapping):
        _fail(key, 'a mapping', value)
    return value


def _databases(value: Any, key: str) -> Mapping:
    for name, entry in _mapping(value, key).items():
        entry_key = f'{key}.{name}'
        if 'dialect' not in _mapping(entry, entry_key):
            raise ConfigError(f"configuration key {entry_key!r}: missing the required key 'dialect'")
        _str(entry['dialect'], f'{entry_key}.dialect')
    return value


#: The keys of a HOSTS entry given as a mapping (HostSettings tells what each means).
HOST_KEYS: frozenset = frozenset({'host', 'python', 'env', 'workdir', 'max_concurrent'})


def _name(value: Any, key: str) -> str:
    """A name the store and ssh can take: a non-empty str without control characters."""
    problem = name_problem(value, 'the value')
    if problem:
        raise ConfigError(f'configuration key {key!r}: {problem}')
    return value


def _env(value: Any, key: str) -> Mapping:
    """Environment variables: names without '=' or NUL, str values without NUL."""
    for name, text in _mapping(value, key).items():
        if not isinstance(name, str) or not name or '=' in name or '\0' in name:
            _fail(f'{key}.{name}', "an environment variable name (a non-empty str without '=')", name)
        if not isinstance(text, str) or '\0' in text:
            _fail(f'{key}.{name}', 'a str without NUL', text)
    return value


def _destination(value: Any, key: str) -> str:
    """An ssh destination: a name, not starting with '-' (which ssh would take for an option)."""
    if _name(value, key).startswith('-'):
        raise ConfigError(f"configuration key {key!r}: the ssh destination {value!r} starts with '-'")
    return value


def _host_entry(entry: Any, key: str) -> Any:
    """One HOSTS entry: an ssh destination, or a mapping of HOST_KEYS (an unknown key is an error)."""
    if isinstance(entry, str):
        return _destination(entry, key)
    if not isinstance(entry, Mapping):
        _fail(key, 'a str (the ssh destination) or a mapping of host settings', entry)
    for name, value in entry.items():
        sub = f'{key}.{name}'
        if name not in HOST_KEYS:
            raise ConfigError(f'configuration key {sub!r} is not known: a host takes '
                              f"{', '.join(sorted(HOST_KEYS))}")
        if name == 'env':
            _env(value, sub)
        elif name == 'max_concurrent':
            if value is not None:
                _int()(value, sub)
        elif name == 'workdir':
            if value is not None:
                _name(value, sub)
        elif name == 'host':
            _destination(value, sub)
        else:  # python
            _name(value, sub)
    return entry


def _hosts(value: Any, key: str) -> Mapping:
    for name, entry in _mapping(value, key).items():
        if not isinstance(name, str) or name_problem(name, 'a host name'):
            _fail(f'{key}.{name}', 'a host name (a non-empty str without control characters)', name)
        _host_entry(entry, f'{key}.{name}')
    return value


_str = _check(lambda v: isinstance(v, str), 'a str')
_str_or_none = _check(lambda v: v is None or isinstance(v, str), 'a str or None')
_bool = _check(lambda v: isinstance(v, bool), 'a bool')
_number = _check(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0,
                 'a number >= 0')
_positive = _check(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0,
                   'a number > 0')
_positive_or_none = _check(lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0),
                           'a number > 0 or None')
_identifier = _check(
    lambda v: v is None or (isinstance(v, str) and v.isidentifier() and not keyword.iskeyword(v)),
    'a valid Python identifier or None')

# The schema: a validator per key, or a nested schema (a dict) for a nested mapping.
SCHEMA: dict = {
    'envvar_prefix': _str,
    'workdir': _str,
    'debug': _bool,
    'sleep_between_loops': _number,
    'stop_on_exception': _bool,
    'shutdown_grace': _number,
    'task_construct': _choice('process', 'thread', 'invoke', 'dask'),
    'max_concurrent': _int(),
    'sequence_arg_name': _identifier,
    'pass_logger_to_task': _bool,
    'item_arg_name': _identifier,
    'parallel_iterations': _int(0),
    'retries': _int(0),
    'retry_delay': _number,
    'retry_backoff': _positive,
    'timeout': _positive_or_none,
    'shared_db': _bool,
    'ssh_config': _str_or_none,
    'ssh_host': _str_or_none,
    'ssh_port': _int(1, 65535),
    'ssh_alive_interval': _positive,
    'ssh_alive_count': _int(1),
    'ssh_connect_timeout': _positive,
    'agent_wait': _number,
    'day_to_keep_db': _int(),
    'remote_method': _str,
    'busy_timeout': _number,
    'store_mode': permission_mode,
    'DATABASES': _databases,
    'HOSTS': _hosts,
    'DASK': {
        'address': _str_or_none,
        'options': _mapping,
    },
    'LOGGING': {
        'logdir': _str,
        'logging_level': logging_level,
        'console': _bool,
        'console_level': _console_level,
        'progress': _bool,
        'file_prefix': _str,
        'file_suffix': _str,
        'file_mode': _str,
        'encoding': _str,
        'maxBytes': _int(0),
        'backupCount': _int(0),
        'when': _str_or_none,
        'interval': _int(1),
        'utc': _bool,
        'atTime': _at_time,
        'delay': _bool,
        'logdir_mode': permission_mode,
        'logfile_mode': permission_mode,
    },
}


_PACKAGE_PREFIX = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # sequent/


def caller_outside_package() -> tuple[int, str | None]:
    """The first frame above the caller that is outside the sequent package: its level and file.

    The level counts as ``warnings.warn``'s stacklevel does from the caller (1: the caller);
    the file is None when the whole stack is sequent's.  The one walk of the call stack: it
    names the user's program and says where a configuration warning points.
    """
    frame = sys._getframe(1)
    level = 1
    try:
        while frame is not None:
            filename = frame.f_code.co_filename
            if not (os.path.abspath(filename).startswith(_PACKAGE_PREFIX) or filename.startswith('<frozen')):
                return level, filename
            frame, level = frame.f_back, level + 1
        return level, None
    finally:
        del frame


def _warn(message: str) -> None:
    """Warn with ConfigWarning, attributed to the first caller outside the sequent package."""
    warnings.warn(message, ConfigWarning, stacklevel=caller_outside_package()[0])


def _validate(config: dict, schema: Mapping, prefix: str = '') -> dict:
    """Check ``config`` in place against ``schema``; warn about unknown keys. Returns ``config``."""
    for key, value in config.items():
        dotted = f'{prefix}{key}'
        rule = schema.get(key)
        if rule is None:
            _warn(f'unknown configuration key {dotted!r} is ignored')
        elif isinstance(rule, Mapping):
            _validate(_mapping(value, dotted), rule, dotted + '.')
        else:
            config[key] = rule(value, dotted)
    return config


# ----------------------------------------------------------------------------------- expansion

_REF = re.compile(r'\$\[([^\[\]]+)\]')


def _expand(config: Mapping) -> dict:
    """Expand every string value of ``config`` (recursively, lists included); returns a new dict."""

    def lookup(path: str, origin: str, stack: tuple) -> Any:
        if path in stack:
            chain = ' -> '.join(stack[stack.index(path):] + (path,))
            raise ConfigError(f'configuration key {origin!r}: reference cycle {chain}')
        node: Any = config
        for part in path.split('.'):
            if not isinstance(node, Mapping) or part not in node:
                raise ConfigError(f'configuration key {origin!r} refers to {path!r}, which does not exist')
            node = node[part]
        return expand(node, path, stack + (path,))

    def expand(value: Any, key: str, stack: tuple) -> Any:
        if isinstance(value, Mapping):
            return {k: expand(v, f'{key}.{k}' if key else str(k), stack) for k, v in value.items()}
        if isinstance(value, list):
            return [expand(v, key, stack) for v in value]
        if not isinstance(value, str):
            return value
        if value.startswith('~'):
            value = os.path.expanduser(value)
        inner = stack if stack[-1:] == (key,) else stack + (key,)
        whole = _REF.fullmatch(value)
        if whole:  # exactly one reference: substitute the value with its type
            return lookup(whole.group(1).strip(), key, inner)
        pieces = _REF.split(value)  # literal, ref, literal, ref, ..., literal
        return ''.join(os.path.expandvars(p) if i % 2 == 0 else str(lookup(p.strip(), key, inner))
                       for i, p in enumerate(pieces))

    return expand(config, '', ())


# ----------------------------------------------------------------------------------- loading

def _read(config: Any) -> Mapping:
    """Turn the ``config`` argument (None, mapping, YAML file path or YAML string) into a mapping."""
    if config is None:
        return {}
    if isinstance(config, Mapping):
        return config
    if isinstance(config, os.PathLike) or (isinstance(config, str) and os.path.isfile(config)):
        path = os.fsdecode(config)
        try:
            with open(path, encoding='utf-8') as f:
                text = f.read()
        except OSError as e:
            raise ConfigError(f'cannot read configuration file {path!r}: {e}') from None
        source = f'configuration file {path!r}'
    elif isinstance(config, str):
        text, source = config, None
    else:
        raise ConfigError(f'config must be a mapping, a YAML file path or a YAML string, got {_got(config)}')
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f'invalid YAML in {source or "configuration string"}: {e}') from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        if source:
            raise ConfigError(f'{source} does not hold a YAML mapping, got {_got(data)}')
        raise ConfigError(f'config is neither an existing YAML file nor a YAML mapping: {config!r}')
    return data


def _select(config: Mapping, tag: str) -> Mapping:
    """Return the sub-tree of ``config`` at the dotted path ``tag``."""
    node: Any = config
    parts = tag.split('.')
    for depth, part in enumerate(parts):
        level = repr('.'.join(parts[:depth])) if depth else 'the top level'
        if not isinstance(node, Mapping):
            raise ConfigError(f'config_tag {tag!r}: the value at {level} is not a mapping, got {_got(node)}')
        if part not in node:
            available = ', '.join(map(repr, node)) or 'none'
            raise ConfigError(f'config_tag {tag!r}: key {part!r} not found at {level} '
                              f'(available keys: {available})')
        node = node[part]
    if not isinstance(node, Mapping):
        raise ConfigError(f'config_tag {tag!r} does not select a mapping, got {_got(node)}')
    return node


def load_config(config: Any = None, config_tag: str | None = None, *, defaults: Mapping = DEFAULTS,
                env_tag_var: str = 'SEQUENT_CONFIG_TAG') -> dict:
    """Load, tag-select, merge over ``defaults``, expand and validate a configuration.

    ``config`` is None, a mapping, a YAML file path or a YAML string; returns a new dict.
    """
    if isinstance(config, LoadedConfig) and not config_tag:
        return LoadedConfig(merge(config, {}))  # already loaded: checked and expanded once is enough
    user = _read(config)
    tag = os.environ.get(env_tag_var, '') if config_tag is None else config_tag
    if tag and config is not None:
        user = _select(user, tag)
    return LoadedConfig(_validate(_expand(merge(defaults, user)), SCHEMA))


class LoadedConfig(dict):
    """A configuration that :func:`load_config` made: loading it again only copies it."""


def validate_step_config(config: Mapping | None, step_name: str) -> dict:
    """Check a step's own ``config`` (only STEP_KEYS matter; others warn) and return those keys.

    Errors and warnings name the step, so a typo in a deep step is easy to find.
    """
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise ConfigError(f'step {step_name!r}: config must be a mapping, got {_got(config)}')
    known = {k: v for k, v in config.items() if k in STEP_KEYS}
    for key in config:
        if key not in STEP_KEYS:
            _warn(f'step {step_name!r}: unknown configuration key {key!r} is ignored')
    try:
        return _validate(known, SCHEMA)
    except ConfigError as e:
        raise ConfigError(f'step {step_name!r}: {e}') from None


# ----------------------------------------------------------------------------------- hosts

@dataclass(frozen=True)
class HostSettings:
    """How to reach a host and run its agent: one ``HOSTS`` entry, normalised by :func:`host_settings`."""

    name: str  #: the host name steps use in ``hosts=[...]``
    destination: str  #: what ssh connects to (an ssh_config alias, ``host``, ``user@host``)
    python: str = 'python3'  #: the interpreter that runs the agent on the host
    env: dict = field(default_factory=dict, hash=False)  #: extra environment variables of the agent
    workdir: Optional[str] = None  #: the agent's working folder (None: the ssh login's)
    max_concurrent: Optional[int] = None  #: tasks at once on the host (None: no limit)


def host_settings(name: str, config: Mapping) -> HostSettings:
    """The settings of host ``name`` from ``config['HOSTS']``; a host not listed there has the defaults.

    An entry is a str (the ssh destination) or a mapping with the optional keys ``host`` (the ssh
    destination, default ``name``), ``python`` (default ``'python3'``), ``env`` (a mapping of str),
    ``workdir`` and ``max_concurrent`` (below 1, or absent: no limit).
    """
    problem = name_problem(name, 'a host name')
    if problem:
        raise ConfigError(problem)
    hosts = config.get('HOSTS') or {}
    entry = _host_entry(hosts[name] if name in hosts else {'host': name}, f'HOSTS.{name}')
    if isinstance(entry, str):
        return HostSettings(name=name, destination=entry)
    limit = entry.get('max_concurrent')
    return HostSettings(name=name, destination=entry.get('host', name), python=entry.get('python', 'python3'),
                        env=dict(entry.get('env') or {}), workdir=entry.get('workdir'),
                        max_concurrent=limit if limit is not None and limit >= 1 else None)
