"""A faster ``schema.load`` for the hot path, derived from the schema itself.

Marshmallow stays the one definition of what a body may hold. :func:`fast_loader`
reads a schema's own objects (its fields, their validators, load defaults and
required flags, its schema-level validators and post-load hooks) and returns a
function that loads the plain, valid case with less machinery: a string or
strict integer field of the exact JSON type is checked by its own validators
without marshmallow's per-field bookkeeping; any other field type runs its own
``deserialize``. It answers None whenever anything is unusual (an unknown or
missing required field, a value of another type, a failing validator); the
caller then loads with the schema, which also words the errors. So a body the
fast loader accepts is one the schema accepts, loaded to the same dict, which
``tests/test_fastload.py`` checks property-wise against the schema.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from marshmallow import Schema, ValidationError, fields
from marshmallow.utils import missing

__all__ = ["fast_loader", "load"]

Loader = Callable[[Any], "dict[str, Any] | None"]

_FAILED = object()


def _checker(name: str, field: fields.Field) -> Callable[[Any, Mapping[str, Any]], Any]:
    """The value ``field`` loads ``value`` to, or ``_FAILED``."""
    validators = tuple(field.validators)
    exact: type | None = None
    if type(field) is fields.String:
        exact = str
    elif type(field) is fields.Integer and field.strict:
        exact = int
    allow_none = field.allow_none

    if exact is not None:
        def check(value: Any, data: Mapping[str, Any]) -> Any:
            if type(value) is not exact:
                return value if value is None and allow_none else _FAILED
            try:
                for validator in validators:
                    if validator(value) is False:
                        return _FAILED
            except ValidationError:
                return _FAILED
            return value
        return check

    def deserialize(value: Any, data: Mapping[str, Any]) -> Any:
        try:
            return field.deserialize(value, name, data)
        except ValidationError:
            return _FAILED
    return deserialize


def fast_loader(schema: Schema) -> Loader:
    """A function loading what ``schema.load`` loads, or None (see the module).

    Only for a plain schema (no ``many``, ``partial``, pre-load hooks, field-level
    ``@validates`` methods, collection-level hooks or renamed fields); for any
    other it always answers None."""
    hooks = schema._hooks
    plain = (not schema.many and not schema.partial and not hooks.get("pre_load") and not hooks.get("validates")
             and all(not many for tag in ("validates_schema", "post_load") for _, many, _ in hooks.get(tag, ()))
             and all(field.data_key in (None, name) and field.attribute in (None, name)
                     for name, field in schema.load_fields.items()))
    if not plain:
        return lambda data: None
    known = frozenset(schema.load_fields)
    checks = [(name, _checker(name, field), field.required, field.load_default)
              for name, field in schema.load_fields.items()]
    validators = [(getattr(schema, attr), options) for attr, _, options in hooks.get("validates_schema", ())]
    processors = [(getattr(schema, attr), options) for attr, _, options in hooks.get("post_load", ())]
    unknown = schema.unknown

    def load(data: Any) -> dict[str, Any] | None:
        if type(data) is not dict or not known.issuperset(data):
            return None
        result: dict[str, Any] = {}
        for name, check, required, default in checks:
            if name in data:
                value = check(data[name], data)
                if value is _FAILED:
                    return None
                result[name] = value
            elif required:
                return None
            elif default is not missing:
                result[name] = default() if callable(default) else default
        try:
            for validator, options in validators:
                if options.get("pass_original"):
                    validator(result, data, partial=None, many=False, unknown=unknown)
                else:
                    validator(result, partial=None, many=False, unknown=unknown)
            for processor, options in processors:
                if options.get("pass_original"):
                    result = processor(result, data, many=False, partial=None, unknown=unknown)
                else:
                    result = processor(result, many=False, partial=None, unknown=unknown)
        except ValidationError:
            return None
        return result

    return load


_loaders: dict[int, tuple[Schema, Loader]] = {}


def load(schema: Schema, data: Any) -> dict[str, Any]:
    """``schema.load(data)``, by the derived loader when it can (each schema
    instance's loader derived once)."""
    entry = _loaders.get(id(schema))
    if entry is None or entry[0] is not schema:
        entry = _loaders[id(schema)] = (schema, fast_loader(schema))
    loaded = entry[1](data)
    return schema.load(data) if loaded is None else loaded
