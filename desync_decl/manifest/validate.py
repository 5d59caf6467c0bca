"""JSON Schema validation of a loaded manifest, every error at once, in words.

jsonschema's messages name Python values ("'stroe' was unexpected"); here
each error becomes one line at the YAML position of the offending key or
value, naming the task/store it is in and what was expected. An unknown key
gets a "did you mean" from the allowed keys.
"""

from __future__ import annotations

import difflib
import json
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from desync_decl.manifest.loader import Document
from desync_decl.manifest.places import SECTIONS, where
from desync_decl.manifest.problems import DataPath, Problem

SCHEMA_FILE = "manifest.schema.json"
VERSION = 1

_TYPES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "nothing",
}


@cache
def schema_text() -> str:
    """The manifest JSON Schema, as shipped (``schemas/manifest.schema.json``)."""
    return resources.files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


@cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(json.loads(schema_text()))


def schema_problems(doc: Document) -> list[Problem]:
    """Everything the schema rejects in ``doc``; an unsupported version hides the rest."""
    data = doc.data
    if not isinstance(data, dict):
        return [
            Problem(doc.at(()), f"a manifest is a mapping (version, tasks, ...), got {_got(data)}")
        ]
    version = data.get("version", VERSION)
    if version != VERSION or isinstance(version, bool):
        message = (
            f"unsupported manifest version {_show(version)} (this desync-decl reads {VERSION})"
        )
        return [Problem(doc.at(("version",)), message, ("version",))]
    problems: list[Problem] = []
    for error in _validator().iter_errors(data):
        problems.extend(_explain(error, doc))
    return problems


def _explain(error: ValidationError, doc: Document) -> list[Problem]:
    path: DataPath = tuple(error.absolute_path)
    keyword = error.validator
    here = where(path, doc.data)
    if keyword == "additionalProperties" and isinstance(error.instance, dict):
        return _unknown_keys(error, path, doc)
    if keyword == "required":
        return _missing(error, path, doc)
    if keyword == "oneOf" and all("required" in s for s in error.validator_value):
        return _actions(error, path, doc)
    if "propertyNames" in error.absolute_schema_path:
        name = str(error.instance)
        kind = SECTIONS.get(str(path[0]), "key") if path else "key"
        message = f"invalid {kind} name '{name}': expected {_expected(error)}"
        return [Problem(doc.key_at((*path, name)), message, (*path, name))]
    return [Problem(doc.at(path), f"{here}: {_value_message(error)}", path)]


def _value_message(error: ValidationError) -> str:
    keyword, value, instance = error.validator, error.validator_value, error.instance
    title = error.schema.get("title") if isinstance(error.schema, dict) else None
    if keyword in ("type", "pattern", "minLength", "minimum") and title:
        hint = ""
        if isinstance(instance, int) and not isinstance(instance, bool) and "octal" in title:
            hint = " (YAML reads an unquoted 0644 as the octal number 420)"
        return f"expected {title}, got {_got(instance)}{hint}"
    if keyword == "type":
        return f"expected {_expected(error)}, got {_got(instance)}"
    if keyword == "enum" and title and isinstance(instance, str):  # a long list: a guess
        close = difflib.get_close_matches(instance, list(map(str, value)), n=1, cutoff=0.6)
        guess = f" (did you mean '{close[0]}'?)" if close else ""
        return f"expected {title}, got {_got(instance)}{guess}"
    if keyword == "enum":
        return f"expected one of: {', '.join(map(str, value))}; got {_got(instance)}"
    if keyword == "const":
        return f"expected {_show(value)}, got {_got(instance)}"
    if keyword == "minItems":
        return "must not be empty" if value == 1 else f"needs at least {value} entries"
    if keyword == "minLength":
        return "must not be empty"
    if keyword == "uniqueItems":
        return f"lists {_show(_first_repeat(instance))} more than once"
    if keyword == "minimum":
        return f"must be at least {value}, got {_show(instance)}"
    return error.message


def _unknown_keys(error: ValidationError, path: DataPath, doc: Document) -> list[Problem]:
    allowed = list(error.schema.get("properties", {}))
    here = where(path, doc.data)
    problems = []
    for key in error.instance:
        if key in allowed:
            continue
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        guess = f"did you mean '{close[0]}'? " if close else ""
        message = f"unknown key '{key}' in {here} ({guess}expected one of: {', '.join(allowed)})"
        problems.append(Problem(doc.key_at((*path, key)), message, (*path, key)))
    return problems


def _missing(error: ValidationError, path: DataPath, doc: Document) -> list[Problem]:
    """A required key, unless a misspelling of it is there (reported as unknown already)."""
    missing = next(k for k in error.validator_value if k not in error.instance)
    allowed = list(error.schema.get("properties", {}))
    for key in error.instance:
        if key not in allowed and difflib.get_close_matches(key, allowed, n=1) == [missing]:
            return []
    message = f"missing required key '{missing}' in {where(path, doc.data)}"
    return [Problem(doc.key_at(path), message, path)]


def _actions(error: ValidationError, path: DataPath, doc: Document) -> list[Problem]:
    """A task needs exactly one action key."""
    if not isinstance(error.instance, dict):
        return []  # reported as "expected a mapping"
    task = error.instance
    actions = [s["required"][0] for s in error.validator_value]
    present = sorted((a for a in actions if a in task), key=lambda a: doc.key_at((*path, a)))
    here = where(path, doc.data)
    if len(present) > 1:
        message = f"{here} has more than one action ({', '.join(present)}): one per task"
        return [Problem(doc.key_at((*path, present[1])), message, path)]
    known = {"name", "tags", *actions}
    if any(key not in known for key in task):
        return []  # a misspelt action is reported as an unknown key already
    message = f"{here} has no action (expected one of: {', '.join(actions)})"
    return [Problem(doc.key_at(path), message, path)]


def _expected(error: ValidationError) -> str:
    schema = error.schema if isinstance(error.schema, dict) else {}
    if schema.get("title"):
        return str(schema["title"])
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    return " or ".join(_TYPES.get(t, t) for t in types) or "something else"


def _first_repeat(items: list[Any]) -> Any:
    for i, item in enumerate(items):
        if item in items[:i]:
            return item
    return None


def _got(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"'{value}'"
    return "a mapping" if isinstance(value, dict) else "a list"


def _show(value: Any) -> str:
    return f"'{value}'" if isinstance(value, str) else json.dumps(value)
