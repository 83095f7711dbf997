"""Server-side prepared statements on PostgreSQL, for the statements of :class:`~storage.Statements`.

psycopg2 sends every statement as text, and PostgreSQL plans it anew each time:
for the hot path's joins and subqueries the planning costs several times the
execution (0.33 ms planning, 0.08 ms running the account answer's statement).
Each connection instead ``PREPARE``s a registered statement the first time it
runs it and ``EXECUTE``s it from then on. Only texts registered here are
prepared (a statement built at run time runs as it is), and a ``PREPARE`` is not
undone by a rollback, so a connection's record of what it prepared stays true.

Off with ``bind(..., prepare=False)`` (``ADDONS_DATABASE_PREPARE``) behind a
pooler that hands a session's statements to other clients (PgBouncer in
transaction mode).
"""

from __future__ import annotations

import hashlib
import re
import weakref
from typing import Any, NamedTuple

from playhouse.pool import PooledPostgresqlDatabase

__all__ = ["register", "PreparingPostgresqlDatabase"]


class _Prepared(NamedTuple):
    name: str
    prepare: str  # PREPARE name AS ... with $1, $2, ...
    execute: str  # EXECUTE name(%s, %s, ...) in psycopg2's style


#: psycopg2 text (``%s`` placeholders, ``%%`` for a literal ``%``) -> how to prepare and run it.
_REGISTRY: dict[str, _Prepared] = {}

_PLACEHOLDER = re.compile(r"%%|%s")
_TYPES = "SELECT parameter_types::text[] FROM pg_prepared_statements WHERE name = %s"


def register(text: str) -> None:
    """Prepare ``text`` (psycopg2's style) on each connection that runs it."""
    if text in _REGISTRY:
        return
    count = 0

    def numbered(match: re.Match[str]) -> str:
        nonlocal count
        if match.group() == "%%":
            return "%%"  # still read by psycopg2's formatting, which makes it %
        count += 1
        return f"${count}"

    name = "addons_" + hashlib.sha1(text.encode()).hexdigest()[:16]
    prepare = f"PREPARE {name} AS {_PLACEHOLDER.sub(numbered, text)}"
    execute = f"EXECUTE {name}" + (f"({', '.join(['%s'] * count)})" if count else "")
    _REGISTRY[text] = _Prepared(name, prepare, execute)


class PreparingPostgresqlDatabase(PooledPostgresqlDatabase):
    """A pooled PostgreSQL database that runs registered statements prepared."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: connection -> names of the statements it has prepared (gone with the connection).
        self._prepared: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()

    def execute_sql(self, sql: str, params: Any = None) -> Any:
        statement = _REGISTRY.get(sql)
        if statement is None:
            return super().execute_sql(sql, params)
        done = self._prepared.setdefault(self.connection(), set())
        if statement.name not in done:
            self._prepare(statement)
            done.add(statement.name)
        return super().execute_sql(statement.execute, params)

    def _prepare(self, statement: _Prepared) -> None:
        """``PREPARE`` the statement, with the parameter types PostgreSQL infers,
        except that an ``integer`` one becomes ``bigint``: as text, ``? > 0`` took
        the type of the value bound (credits beyond 2**31 included); prepared, the
        literal ``0`` would make it a 32-bit integer."""
        super().execute_sql(statement.prepare, ())
        types = super().execute_sql(_TYPES, (statement.name,)).fetchone()[0]
        if "integer" in types:
            declared = ", ".join("bigint" if kind == "integer" else kind for kind in types)
            super().execute_sql(f"DEALLOCATE {statement.name}", ())
            super().execute_sql(statement.prepare.replace(" AS ", f"({declared}) AS ", 1), ())
