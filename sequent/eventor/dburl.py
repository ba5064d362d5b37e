"""Resolve the ``store`` argument into a SQLAlchemy URL and engine options (SPEC A7, B4.1).

``store`` may name a ``DATABASES`` entry, be ``':memory:'``, a SQLAlchemy URL, or a SQLite file path;
empty means ``DATABASES['default']`` or else the default SQLite file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import EventorError

__all__ = ['StoreTarget', 'resolve_store', 'default_store_path']

_URL_KEYS = ('username', 'password', 'host', 'port', 'database', 'query')
_MEMORY_DATABASES = (None, '', ':memory:')


@dataclass(frozen=True)
class StoreTarget:
    """Where the store lives: a URL plus what the engine needs to know about it."""

    url: str  # a SQLAlchemy URL string
    engine_kwargs: dict = field(default_factory=dict, hash=False)  # extra kwargs for create_engine
    schema: str | None = None  # table schema (PostgreSQL), None for the default
    is_memory: bool = False  # the in-memory SQLite store
    is_sqlite: bool = False
    display: str = ''  # for log lines: the SQLite file path, else the URL with the password masked


def _mask(text: str) -> str:
    """A URL with its password (between ':' and '@' after '://') replaced by ***, for error texts."""
    scheme, sep, rest = text.partition('://')
    creds, at, host = rest.rpartition('@')
    if not sep or not at or ':' not in creds:
        return text
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"


def _memory() -> StoreTarget:
    return StoreTarget('sqlite://', {}, None, True, True, ':memory:')


def _sqlite_file(path: str) -> StoreTarget:
    from sqlalchemy.engine import URL  # imported when a store is opened, not with the package

    path = os.path.abspath(os.path.expanduser(path))
    url = URL.create('sqlite', database=path).render_as_string(hide_password=False)
    return StoreTarget(url, {}, None, False, True, path)


def _from_url(text: str) -> StoreTarget:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    """A SQLAlchemy URL used as given; parsed only to recognise SQLite and to mask the password."""
    try:
        url = make_url(text)
        url.port  # noqa: B018 - parsed lazily by some versions: a bad port must fail here
    except (ArgumentError, ValueError) as e:
        shown = _mask(text)
        raise EventorError(f'store {shown!r} is not a valid SQLAlchemy URL (check its host, port and '
                           f'database parts): {e}') from None
    if url.get_backend_name() != 'sqlite':
        return StoreTarget(text, {}, None, False, False, url.render_as_string(hide_password=True))
    memory = url.database in _MEMORY_DATABASES
    return StoreTarget(text, {}, None, memory, True, ':memory:' if memory else url.database)


def _from_entry(name: str, entry: Any) -> StoreTarget:
    from sqlalchemy.engine import URL
    from sqlalchemy.exc import ArgumentError

    """A ``DATABASES`` entry: URL parts, ``drivername``, ``schema``; other keys go to create_engine."""
    if not isinstance(entry, Mapping):
        raise EventorError(f'DATABASES entry {name!r} must be a mapping, got {type(entry).__name__}')
    if not entry.get('dialect'):
        raise EventorError(f"DATABASES entry {name!r} has no 'dialect' (sqlite, postgresql, mysql, ...)")
    rest = dict(entry)
    dialect, driver, schema = rest.pop('dialect'), rest.pop('drivername', None), rest.pop('schema', None)
    parts = {key: rest.pop(key) for key in _URL_KEYS if key in rest}
    is_sqlite = dialect == 'sqlite'
    memory = is_sqlite and parts.get('database') in _MEMORY_DATABASES
    if is_sqlite:
        parts['database'] = None if memory else os.path.abspath(os.path.expanduser(parts['database']))
        schema = None  # SQLite has no schemas
    if isinstance(parts.get('port'), str) and parts['port'].isdigit():
        parts['port'] = int(parts['port'])
    try:
        url = URL.create(f'{dialect}+{driver}' if driver else dialect, **parts)
    except (TypeError, ValueError, ArgumentError) as e:
        raise EventorError(f'DATABASES entry {name!r} does not make a valid URL: {e}') from None
    if is_sqlite:
        display = ':memory:' if memory else parts['database']
    else:
        display = url.render_as_string(hide_password=True)
    return StoreTarget(url.render_as_string(hide_password=False), rest, schema, memory, is_sqlite, display)


def resolve_store(store: Any, databases: Mapping, default_path: str) -> StoreTarget:
    """Resolve ``store`` following SPEC B4.1: a DATABASES key, ':memory:', a URL, a SQLite path, or empty.

    Empty means ``databases['default']`` when present, else a SQLite file at ``default_path``.
    """
    databases = databases or {}
    if isinstance(store, str) and store in databases:
        return _from_entry(store, databases[store])
    if isinstance(store, os.PathLike):
        store = os.fsdecode(store)
    if store is None or store == '':
        if 'default' in databases:
            return _from_entry('default', databases['default'])
        return _sqlite_file(default_path)
    if not isinstance(store, str):
        raise EventorError(f'store must be a str, a path or None, got {store!r} ({type(store).__name__})')
    if store == ':memory:':
        return _memory()
    if '://' in store:
        return _from_url(store)
    return _sqlite_file(store)


def default_store_path(module_file: str | None, cwd: str | None = None) -> str:
    """The default SQLite store: ``<cwd>/<module basename without .py>.run.db``.

    Without a real module file (None, '<stdin>', '<string>') the name is ``sequent.run.db``.
    """
    base = os.path.basename(os.fsdecode(module_file)) if module_file else ''
    if not base or (base.startswith('<') and base.endswith('>')):
        base = 'sequent'
    stem, ext = os.path.splitext(base)
    return os.path.join(cwd or os.getcwd(), (stem if ext in ('.py', '.pyc', '.pyw') else base) + '.run.db')
