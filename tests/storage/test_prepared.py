"""Server-side prepared statements on PostgreSQL (storage.prepared)."""

from __future__ import annotations

import pytest

import storage
from storage import Statements, prepared

_SQL = Statements(
    positive="SELECT ? > 0",
    percent="SELECT '50%' || ?, CAST(? AS INTEGER)",
    nothing="SELECT 1",
)


def test_placeholders_are_numbered_and_a_literal_percent_kept_for_the_driver():
    text = storage.sql("SELECT '50%' || ?, CAST(? AS INTEGER)", "postgresql")
    statement = prepared._REGISTRY[text]
    assert statement.prepare == f"PREPARE {statement.name} AS SELECT '50%%' || $1, CAST($2 AS INTEGER)"
    assert statement.execute == f"EXECUTE {statement.name}(%s, %s)"
    bare = prepared._REGISTRY[storage.sql("SELECT 1", "postgresql")]
    assert bare.execute == f"EXECUTE {bare.name}"


def _prepared_names() -> set[str]:
    return {name for (name,) in storage.db.execute_sql("SELECT name FROM pg_prepared_statements").fetchall()}


@pytest.fixture
def postgres(postgres_url):
    storage.bind(postgres_url)
    yield storage.db.obj
    storage.unbind()


def test_a_statement_is_prepared_once_per_connection_and_then_executed(postgres):
    name = prepared._REGISTRY[_SQL["percent"]].name
    assert name not in _prepared_names()
    assert storage.db.execute_sql(_SQL["percent"], ("off", 7)).fetchone() == ("50%off", 7)
    assert name in _prepared_names()
    calls = []
    real = postgres._prepare
    postgres._prepare = lambda statement: calls.append(statement) or real(statement)
    assert storage.db.execute_sql(_SQL["percent"], ("", 8)).fetchone() == ("50%", 8)
    assert calls == []


def test_a_parameter_inferred_as_integer_takes_any_bigint(postgres):
    assert storage.db.execute_sql(_SQL["positive"], (2**40,)).fetchone() == (True,)
    name = prepared._REGISTRY[_SQL["positive"]].name
    types = storage.db.execute_sql("SELECT parameter_types::text[] FROM pg_prepared_statements WHERE name = %s",
                                   (name,)).fetchone()[0]
    assert types == ["bigint"]


def test_a_rollback_keeps_what_the_connection_prepared(postgres):
    with pytest.raises(RuntimeError), storage.transaction():
        storage.db.execute_sql(_SQL["nothing"])
        raise RuntimeError("roll back")
    assert storage.db.execute_sql(_SQL["nothing"]).fetchone() == (1,)


def test_a_new_connection_prepares_again(postgres):
    storage.db.execute_sql(_SQL["nothing"])
    postgres.close_all()
    assert storage.db.execute_sql(_SQL["nothing"]).fetchone() == (1,)
    assert prepared._REGISTRY[_SQL["nothing"]].name in _prepared_names()


def test_prepare_false_runs_statements_as_text(postgres_url):
    storage.bind(postgres_url, prepare=False)
    assert not isinstance(storage.db.obj, prepared.PreparingPostgresqlDatabase)
    assert storage.db.execute_sql(_SQL["percent"], ("x", 1)).fetchone() == ("50%x", 1)
    assert prepared._REGISTRY[_SQL["percent"]].name not in _prepared_names()
