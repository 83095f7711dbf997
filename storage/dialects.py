"""Raw SQL for either dialect, written once with ``?`` placeholders.

SQLite's driver takes ``?``; psycopg2 takes ``%s`` and reads every other ``%``
as the start of one, so a literal ``%`` (``LIKE 'a%'``) must reach it as ``%%``.
:func:`sql` does both. A ``?`` inside a string literal is left alone; the ``?``
JSON operators of PostgreSQL cannot be written this way (bind a value instead).
Prepared on PostgreSQL, a parameter takes the type its place in the statement
gives it, so one nothing there types (a bare ``SELECT ?``) is text: ``CAST`` it.

The hot path prepares its statements once, at import, with :class:`Statements`,
and pays a dictionary lookup per execution, not a string replace; on PostgreSQL
they also run as server-side prepared statements (:mod:`storage.prepared`).
"""

from __future__ import annotations

from collections.abc import Mapping

from . import prepared
from .database import dialect as bound_dialect

__all__ = ["DIALECTS", "sql", "Statements"]

#: The dialects :func:`storage.dialect` names.
DIALECTS = ("sqlite", "postgresql")


def sql(text: str, dialect: str | None = None) -> str:
    """``text``, written with ``?`` placeholders, as ``dialect``'s driver takes it
    (default: the bound database's). For statements run now and then; prepare the
    frequent ones with :class:`Statements`."""
    dialect = dialect or bound_dialect()
    if dialect == "sqlite":
        return text
    if dialect != "postgresql":
        raise ValueError(f"Unknown SQL dialect {dialect!r}: expected one of {DIALECTS}.")
    # Split at quotes: even parts are outside string literals ('' inside one splits
    # into an empty outside part, so escaped quotes keep the count right).
    parts = text.replace("%", "%%").split("'")
    parts[::2] = [part.replace("?", "%s") for part in parts[::2]]
    return "'".join(parts)


class Statements:
    """Named SQL statements, translated for each dialect once.

    Each statement is SQL written with ``?``, or a ``{dialect: SQL}`` mapping where
    the dialects differ (a statement only one dialect runs names only that one)::

        _SQL = Statements(balance="SELECT balance FROM credit_account WHERE id = ?")
        db.execute_sql(_SQL["balance"], (account_id,))   # the bound dialect's text
    """

    __slots__ = ("by_dialect",)

    def __init__(self, **statements: str | Mapping[str, str]) -> None:
        #: ``{dialect: {name: SQL}}``, ready for that dialect's driver.
        self.by_dialect: dict[str, dict[str, str]] = {dialect: {} for dialect in DIALECTS}
        for name, text in statements.items():
            variants = dict.fromkeys(DIALECTS, text) if isinstance(text, str) else dict(text)
            for dialect, variant in variants.items():
                if dialect not in DIALECTS:
                    raise ValueError(f"Statement {name!r}: unknown dialect {dialect!r}, expected one of {DIALECTS}.")
                self.by_dialect[dialect][name] = text_for_driver = sql(variant, dialect)
                if dialect == "postgresql":
                    prepared.register(text_for_driver)

    def __getitem__(self, name: str) -> str:
        """The statement ``name`` for the bound database."""
        return self.by_dialect[bound_dialect()][name]
