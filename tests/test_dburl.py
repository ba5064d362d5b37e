"""Tests of sequent.eventor.dburl: resolving the store argument (SPEC A7, B4.1)."""

import os

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from sequent.eventor.dburl import StoreTarget, default_store_path, resolve_store
from sequent.eventor.errors import EventorError

PG = {'dialect': 'postgresql', 'drivername': 'psycopg2', 'username': 'bob', 'password': 's3cr:t@x',
      'host': 'db.example', 'port': 5432, 'database': 'pyground', 'schema': 'play'}


# ------------------------------------------------------------------------------- DATABASES entries

def test_postgres_entry_builds_url_with_driver_schema_and_masked_display():
    target = resolve_store('pgdb2', {'pgdb2': PG}, '/unused.db')
    url = make_url(target.url)
    assert url.drivername == 'postgresql+psycopg2'
    assert (url.username, url.password, url.host, url.port, url.database) == (
        'bob', 's3cr:t@x', 'db.example', 5432, 'pyground')
    assert target.schema == 'play'
    assert not target.is_sqlite and not target.is_memory
    assert target.display == 'postgresql+psycopg2://bob:***@db.example:5432/pyground'


def test_entry_without_drivername_uses_dialect_only():
    entry = {k: v for k, v in PG.items() if k != 'drivername'}
    assert make_url(resolve_store('pg', {'pg': entry}, '').url).drivername == 'postgresql'


def test_entry_query_and_engine_kwargs():
    entry = dict(PG, query={'sslmode': 'require'}, pool_size=3, echo=True)
    target = resolve_store('pg', {'pg': entry}, '')
    assert make_url(target.url).query == {'sslmode': 'require'}
    assert target.engine_kwargs == {'pool_size': 3, 'echo': True}


def test_entry_is_not_mutated():
    entry = dict(PG, pool_size=3)
    resolve_store('pg', {'pg': entry}, '')
    assert entry == dict(PG, pool_size=3)


def test_sqlite_entry_database_expanded_and_absolute(tmp_path, monkeypatch):
    monkeypatch.setenv('HOME', str(tmp_path))
    target = resolve_store('lite', {'lite': {'dialect': 'sqlite', 'database': '~/runs/x.db'}}, '')
    path = str(tmp_path / 'runs' / 'x.db')
    assert target.url == 'sqlite:///' + path
    assert target.display == path
    assert target.is_sqlite and not target.is_memory and target.schema is None


def test_sqlite_entry_relative_database_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    target = resolve_store('lite', {'lite': {'dialect': 'sqlite', 'database': 'rel.db'}}, '')
    assert target.url == 'sqlite:///' + os.path.join(os.getcwd(), 'rel.db')


def test_sqlite_entry_drops_schema_because_sqlite_has_none(tmp_path):
    entry = {'dialect': 'sqlite', 'database': str(tmp_path / 'a.db'), 'schema': 'play'}
    assert resolve_store('lite', {'lite': entry}, '').schema is None


@pytest.mark.parametrize('entry', [{'dialect': 'sqlite'}, {'dialect': 'sqlite', 'database': ':memory:'}])
def test_sqlite_entry_without_database_is_memory(entry):
    target = resolve_store('mem', {'mem': entry}, '')
    assert target.is_memory and target.is_sqlite
    assert make_url(target.url).database is None


def test_entry_name_wins_over_path_interpretation(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_store(':memory:', {':memory:': PG}, '').schema == 'play'


def test_entry_not_a_mapping_raises_naming_it():
    with pytest.raises(EventorError, match="'pg'"):
        resolve_store('pg', {'pg': 'postgresql://h/d'}, '')


def test_entry_without_dialect_raises_naming_it():
    with pytest.raises(EventorError, match="'pg'.*dialect"):
        resolve_store('pg', {'pg': {'host': 'h'}}, '')


# ------------------------------------------------------------------------------- other forms

def test_memory_store():
    target = resolve_store(':memory:', {}, '/unused.db')
    assert target == StoreTarget('sqlite://', {}, None, True, True, ':memory:')


def test_url_used_as_is_with_password_masked_in_display():
    url = 'postgresql://u:pw@h:5433/d'
    target = resolve_store(url, {}, '')
    assert target.url == url
    assert not target.is_sqlite and not target.is_memory
    assert 'pw' not in target.display and target.display == 'postgresql://u:***@h:5433/d'


@pytest.mark.parametrize('url', ['sqlite://', 'sqlite:///:memory:'])
def test_sqlite_memory_urls(url):
    target = resolve_store(url, {}, '')
    assert target.url == url and target.is_sqlite and target.is_memory


def test_sqlite_file_url_used_as_is():
    target = resolve_store('sqlite:////tmp/a.db', {}, '')
    assert target.url == 'sqlite:////tmp/a.db'
    assert target.is_sqlite and not target.is_memory and target.display == '/tmp/a.db'


def test_invalid_url_raises():
    with pytest.raises(EventorError, match='not a valid SQLAlchemy URL'):
        resolve_store('://nothing', {}, '')


def test_relative_sqlite_path_made_absolute_against_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    target = resolve_store('sub/my.db', {}, '')
    path = os.path.join(os.getcwd(), 'sub', 'my.db')
    assert target.url == 'sqlite:///' + path
    assert target.display == path
    assert target.is_sqlite and not target.is_memory and target.engine_kwargs == {}


def test_pathlike_store_is_sqlite_path(tmp_path):
    target = resolve_store(tmp_path / 'p.db', {}, '')
    assert target.url == 'sqlite:///' + str(tmp_path / 'p.db')


def test_tilde_in_sqlite_path_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv('HOME', str(tmp_path))
    assert resolve_store('~/h.db', {}, '').display == str(tmp_path / 'h.db')


def test_sqlite_url_with_special_characters_round_trips(tmp_path):
    path = str(tmp_path / 'odd?name%.db')
    assert make_url(resolve_store(path, {}, '').url).database == path


@pytest.mark.parametrize('store', ['', None])
def test_empty_store_uses_default_entry(store):
    assert resolve_store(store, {'default': PG}, '/unused.db').schema == 'play'


@pytest.mark.parametrize('store', ['', None])
def test_empty_store_without_default_entry_uses_default_path(store, tmp_path):
    path = str(tmp_path / 'flow.run.db')
    target = resolve_store(store, {'other': PG}, path)
    assert target.url == 'sqlite:///' + path and target.display == path


def test_databases_may_be_none():
    assert resolve_store('', None, '/x/y.db').display == '/x/y.db'


@pytest.mark.parametrize('store', [3, b'x.db', ['x']])
def test_unknown_store_type_raises(store):
    with pytest.raises(EventorError, match='store must be'):
        resolve_store(store, {}, '')


def test_resolved_urls_open_with_sqlalchemy(tmp_path):
    for store in (':memory:', str(tmp_path / 'real.db')):
        target = resolve_store(store, {}, '')
        engine = create_engine(target.url, **target.engine_kwargs)
        with engine.connect() as conn:
            assert conn.execute(text('select 1')).scalar() == 1
        engine.dispose()
    assert (tmp_path / 'real.db').exists()


# ------------------------------------------------------------------------------- default path

def test_default_store_path_uses_module_basename_in_cwd(tmp_path):
    assert default_store_path('/somewhere/else/runly00.py', str(tmp_path)) == str(tmp_path / 'runly00.run.db')


def test_default_store_path_defaults_to_process_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert default_store_path('flow.py') == os.path.join(os.getcwd(), 'flow.run.db')


@pytest.mark.parametrize('module_file', [None, '', '<stdin>', '<string>'])
def test_default_store_path_without_real_module_file(module_file, tmp_path):
    assert default_store_path(module_file, str(tmp_path)) == str(tmp_path / 'sequent.run.db')


def test_default_store_path_keeps_non_python_names(tmp_path):
    assert default_store_path('/bin/myscript', str(tmp_path)) == str(tmp_path / 'myscript.run.db')
