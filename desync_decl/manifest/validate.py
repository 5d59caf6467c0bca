"""JSON Schema validation of a loaded manifest, every error at once, in words.

jsonschema's messages name Python values ("'stroe' was unexpected"); here
each error becomes one line at the YAML position of the offending key or
value, naming the task/store it is in and what was expected. An unknown key
gets a "did you mean" from the allowed keys. A value read from ``${env:…}`` is
shown as written, never as read.

``env_rule`` reads the schema's ``"x-env"`` marks: which fields may use
``${env:…}``, and how (``environment``).
"""

from __future__ import annotations

import difflib
import json
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from desync_decl.manifest.environment import ENV_KEYWORD, EnvRule
from desync_decl.manifest.loader import Document, EnvText
from desync_decl.manifest.places import SECTIONS, where
from desync_decl.manifest.problems import MAX_PROBLEMS, DataPath, Problem

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
def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(schema_text())
    return schema


@cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(_schema())


def env_rule(path: DataPath) -> EnvRule | None:
    """How the value at ``path`` may use ``${env:…}``: the ``"x-env"`` mark of its
    property or of the definition that refers to; None where it may not (or where
    the schema has no such place)."""
    node: dict[str, Any] | None = _schema()
    for part in path:
        node = _child(_definition(node), part) if node is not None else None
    while node is not None:
        if ENV_KEYWORD in node:
            return EnvRule(node[ENV_KEYWORD])
        node = _referred(node)
    return None


def _child(node: dict[str, Any], part: str | int) -> dict[str, Any] | None:
    """The schema of a mapping's key or a list's item."""
    if isinstance(part, int):
        found = node.get("items")
    else:
        found = node.get("properties", {}).get(part, node.get("additionalProperties"))
    return found if isinstance(found, dict) else None


def _definition(node: dict[str, Any]) -> dict[str, Any]:
    """``node`` with its ``$ref`` followed to the definition holding the properties."""
    while (target := _referred(node)) is not None:
        node = target
    return node


def _referred(node: dict[str, Any]) -> dict[str, Any] | None:
    ref = node.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/$defs/"):
        return None
    found = _schema()["$defs"].get(ref.removeprefix("#/$defs/"))
    return found if isinstance(found, dict) else None


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
        if len(problems) > MAX_PROBLEMS:  # more would not be shown, only cost time
            break
    return problems


def _explain(error: ValidationError, doc: Document) -> list[Problem]:
    path: DataPath = tuple(error.absolute_path)
    keyword = error.validator
    here = where(path, doc.data)
    if keyword == "additionalProperties" and isinstance(error.instance, dict):
        return _unknown_keys(error, path, doc)
    if keyword == "required":
        return _missing(error, path, doc)
    if keyword == "oneOf" and all("required" in s for s in _list(error.validator_value)):
        return _actions(error, path, doc)
    if "propertyNames" in error.absolute_schema_path:
        name = str(error.instance)
        kind = SECTIONS.get(str(path[0]), "key") if path else "key"
        message = f"invalid {kind} name '{name}': expected {_expected(error)}"
        return [Problem(doc.key_at((*path, name)), message, (*path, name))]
    return [Problem(doc.at(path), f"{here}: {_value_message(error, doc.env.get(path))}", path)]


def _value_message(error: ValidationError, env: EnvText | None) -> str:
    """What is wrong with a value; one read from ``${env:…}`` (``env``) is shown as written."""
    keyword, value, instance = error.validator, error.validator_value, error.instance
    title = _failed_schema(error).get("title")
    got = f"'{env.shown}' ({_kind(instance)})" if env else _got(instance)
    shown = f"'{env.shown}'" if env else _show(instance)
    if keyword in ("type", "pattern", "minLength", "minimum") and title:
        hint = ""
        if isinstance(instance, int) and not isinstance(instance, bool) and "octal" in title:
            hint = " (YAML reads an unquoted 0644 as the octal number 420)"
        return f"expected {title}, got {got}{hint}"
    if keyword == "type":
        return f"expected {_expected(error)}, got {got}"
    if keyword == "enum" and title and isinstance(instance, str):  # a long list: a guess
        close = difflib.get_close_matches(instance, list(map(str, _list(value))), n=1, cutoff=0.6)
        guess = f" (did you mean '{close[0]}'?)" if close else ""
        return f"expected {title}, got {got}{guess}"
    if keyword == "enum":
        return f"expected one of: {', '.join(map(str, _list(value)))}; got {got}"
    if keyword == "const":
        return f"expected {_show(value)}, got {got}"
    if keyword == "minItems":
        return "must not be empty" if value == 1 else f"needs at least {value} entries"
    if keyword == "minLength":
        return "must not be empty"
    if keyword == "uniqueItems":
        return f"lists {_show(_first_repeat(_list(instance)))} more than once"
    if keyword == "minimum":
        return f"must be at least {value}, got {shown}"
    if env:
        return f"{shown} is not valid here"  # jsonschema's own message would quote the value
    return error.message


def _unknown_keys(error: ValidationError, path: DataPath, doc: Document) -> list[Problem]:
    allowed = list(_failed_schema(error).get("properties", {}))
    here = where(path, doc.data)
    problems = []
    for key in _dict(error.instance):
        if key in allowed:
            continue
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        guess = f"did you mean '{close[0]}'? " if close else ""
        message = f"unknown key '{key}' in {here} ({guess}expected one of: {', '.join(allowed)})"
        problems.append(Problem(doc.key_at((*path, key)), message, (*path, key)))
    return problems


def _missing(error: ValidationError, path: DataPath, doc: Document) -> list[Problem]:
    """A required key, unless a misspelling of it is there (reported as unknown already)."""
    instance = _dict(error.instance)
    missing = next(k for k in _list(error.validator_value) if k not in instance)
    allowed = list(_failed_schema(error).get("properties", {}))
    for key in instance:
        if key not in allowed and difflib.get_close_matches(key, allowed, n=1) == [missing]:
            return []
    message = f"missing required key '{missing}' in {where(path, doc.data)}"
    return [Problem(doc.key_at(path), message, path)]


def _actions(error: ValidationError, path: DataPath, doc: Document) -> list[Problem]:
    """A task needs exactly one action key."""
    if not isinstance(error.instance, dict):
        return []  # reported as "expected a mapping"
    task = error.instance
    actions = [s["required"][0] for s in _list(error.validator_value)]
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
    schema = _failed_schema(error)
    if schema.get("title"):
        return str(schema["title"])
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    return " or ".join(_TYPES.get(t, t) for t in types) or "something else"


def _failed_schema(error: ValidationError) -> dict[str, Any]:
    """The (sub)schema that failed; a boolean schema, or none, as an empty one."""
    return error.schema if isinstance(error.schema, dict) else {}


def _list(value: object) -> list[Any]:
    """A list from the schema or the data (jsonschema types them loosely: ``Any | Unset``)."""
    return value if isinstance(value, list) else []


def _dict(value: object) -> dict[str, Any]:
    """A mapping from the data, as ``_list``."""
    return value if isinstance(value, dict) else {}


def _first_repeat(items: list[Any]) -> Any:
    for i, item in enumerate(items):
        if item in items[:i]:
            return item
    return None


def _kind(value: Any) -> str:
    """``a string``, ``a number``, ...: what a value read from the environment became."""
    if isinstance(value, bool):
        return _TYPES["boolean"]
    if isinstance(value, int | float):
        return _TYPES["number"]
    return _TYPES["string"] if isinstance(value, str) else _got(value)


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
