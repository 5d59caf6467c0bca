"""YAML to plain data, keeping the line and column of every key and value.

PyYAML's ``compose`` gives a node tree with marks; this module builds the
Python values from it itself, so that it can record positions, refuse
duplicate keys (PyYAML keeps the last one silently), follow ``<<`` merge keys
and expand ``${env:NAME}`` in string scalars. ``$${env:NAME}`` stays literal.
A plain (unquoted) scalar that is exactly one reference takes the YAML type
of the variable's value (``concurrency: ${env:JOBS}`` gives an integer); a
quoted one stays a string (in a flow mapping ``{...}`` a plain scalar cannot
hold ``}``, so write typed references in block style). Mapping keys are kept
as written, always strings.

References are read only where ``env_rule`` (the schema's ``"x-env"`` marks, see
``environment``) allows them; elsewhere they are refused and the variable is not
read. The document records every value built from the environment (``env``),
with the text it was written as, so that messages and outputs show
``${env:NAME}`` instead of the value.

A hostile file stays cheap: a file larger than ``MAX_FILE_BYTES`` is refused
before it is parsed, and one writing more than ``MAX_VALUES`` values while its
events are counted, before a node tree is built (a 4 MB ``tasks: [0,0,…]`` of
2 million values took 100 s and 1.3 GB to validate, checked one by one); nesting
deeper than ``MAX_DEPTH`` is refused from
the event stream before a node tree is built (libyaml's composer recurses in C
and crashes the process on a few hundred thousand ``[``), and aliases may add
at most ``MAX_ALIAS_VALUES`` values and ``MAX_ALIAS_BYTES`` of text to what is
written (a "billion laughs" file of a few hundred bytes would otherwise expand to
gigabytes; one 1 MB string named 99,000 times is few values but 99 GB to check).
A string is scanned for references once, however many aliases name it.
"""

from __future__ import annotations

import bisect
import datetime
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from desync_decl.manifest.environment import EnvRule, refusals
from desync_decl.manifest.places import where
from desync_decl.manifest.problems import DataPath, Position, Problem

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TAG = "tag:yaml.org,2002:"
_PLAIN_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null", "timestamp")}
# What YAML counts as a line break (its marks' lines are counted by these, not by "\n")
_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
_ENV = re.compile(r"(\$?)\$\{env:([^}]*)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_FILE_BYTES = 4 << 20  # a manifest file; real ones are a few KiB
MAX_VALUES = 100_000  # scalars, mappings and lists written in the file
MAX_DEPTH = 64  # nested mappings and lists, aliases followed
MAX_ALIAS_VALUES = 100_000  # values aliases may add to those written in the file
MAX_ALIAS_BYTES = 1 << 20  # text aliases may add (characters of scalars, bytes for ASCII)


@dataclass(frozen=True)
class EnvText:
    """A string scalar that read the environment."""

    value: str = field(repr=False)  # as expanded (before a plain scalar is typed)
    shown: str  # as written: each reference kept as ${env:NAME}
    variables: tuple[tuple[str, str], ...] = field(repr=False)  # (name, value) read
    typed: bool = False  # a plain reference that YAML typed (a number, a boolean)


@dataclass
class Document:
    """A loaded YAML file: plain ``data`` plus where each part of it was written."""

    file: str
    data: Any
    values: dict[DataPath, Position] = field(default_factory=dict)
    keys: dict[DataPath, Position] = field(default_factory=dict)
    env: dict[DataPath, EnvText] = field(default_factory=dict)  # values read from ${env:…}

    def at(self, path: DataPath) -> Position:
        """Where the value at ``path`` was written (or its nearest known parent)."""
        for n in range(len(path), -1, -1):
            found = self.values.get(path[:n])
            if found is not None:
                return found
        return Position(self.file, 1, 1)

    def key_at(self, path: DataPath) -> Position:
        """Where the key naming ``path`` was written; the value's place for list items."""
        return self.keys.get(path) or self.at(path)

    def as_written(self, path: DataPath, value: Any) -> Any:
        """``value`` (at ``path``) for a message: its text as written if it read the
        environment (``${env:NAME}``, never the variable's value)."""
        found = self.env.get(path)
        return found.shown if found is not None else value


def _nowhere(path: DataPath) -> EnvRule | None:
    return None


def load_document(
    text: str,
    file: str,
    env: Mapping[str, str],
    env_rule: Callable[[DataPath], EnvRule | None] = _nowhere,
) -> tuple[Document | None, list[Problem]]:
    """Parse ``text``; a YAML syntax error gives no document and one problem.

    ``env_rule`` says where ``${env:…}`` may be used (by default nowhere)."""
    try:
        written, refused = _scan(text, file)
        if refused is not None:
            return None, [refused]
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = Position(file, mark.line + 1, mark.column + 1) if mark else Position(file)
        what = e.problem or e.context or "invalid YAML"
        if "single document" in what or "but found another document" in what:
            what = "a manifest is one YAML document; found another (remove the extra '---')"
        return None, [Problem(at, f"invalid YAML: {what}")]
    except yaml.YAMLError as e:
        return None, [Problem(Position(file), f"invalid YAML: {e}")]
    if root is None:
        return None, [Problem(Position(file), "the manifest is empty")]
    builder = _Builder(text, file, env, env_rule, written + MAX_ALIAS_VALUES)
    document = Document(file, None, builder.values, builder.keys, builder.env)
    try:
        document.data = builder.build(root, ())
    except _TooLarge as e:
        return None, [Problem(builder.pos(e.mark), f"aliases expand the manifest by {e.what}")]
    late = [
        Problem(at, f"{where(path, document.data)}: {message}", path)
        for at, path, message in builder.refused
    ]
    return document, builder.problems + late


def _scan(text: str, file: str) -> tuple[int, Problem | None]:
    """The number of values written, or where the file first writes too many or nests
    too deep (events are produced without recursion, so this is safe on any input)."""
    depth = written = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.NodeEvent):
            written += 1
            if written > MAX_VALUES:
                return written, _refused(event, file, f"more than {MAX_VALUES} values")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                return written, _refused(event, file, f"nested deeper than {MAX_DEPTH} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return written, None


def _refused(event: yaml.Event, file: str, message: str) -> Problem:
    mark = event.start_mark  # the parser marks every event it makes
    at = Position(file, mark.line + 1, mark.column + 1) if mark else Position(file)
    return Problem(at, message)


class _TooLarge(Exception):
    def __init__(self, mark: Any, what: str) -> None:
        self.mark, self.what = mark, what


@dataclass(frozen=True)
class _Expansion:
    """What a string scalar gives under one rule (computed once, reused by aliases)."""

    value: Any
    env: EnvText | None
    problems: tuple[tuple[Position, str], ...]  # invalid or unset variables
    refused: tuple[tuple[Position, str], ...]  # references not allowed where they stand


class _Builder:
    def __init__(
        self,
        text: str,
        file: str,
        env: Mapping[str, str],
        env_rule: Callable[[DataPath], EnvRule | None],
        budget: int,
    ) -> None:
        self.file = file
        self.budget = budget  # values left to build
        self.text_budget = len(text) + MAX_ALIAS_BYTES  # characters of scalars left to build
        self.environ = env
        self.env_rule = env_rule
        self.values: dict[DataPath, Position] = {}
        self.keys: dict[DataPath, Position] = {}
        self.env: dict[DataPath, EnvText] = {}
        self.problems: list[Problem] = []
        self.refused: list[tuple[Position, DataPath, str]] = []
        self._references: dict[int, list[tuple[re.Match[str], Position]]] = {}
        self._expansions: dict[tuple[int, EnvRule | None], _Expansion] = {}
        self._constructor = yaml.constructor.SafeConstructor()
        self._resolver = yaml.resolver.Resolver()
        self._line_starts = [0] + [m.end() for m in _LINE_BREAK.finditer(text)]
        self._text = text
        self._open: set[int] = set()  # mappings and lists being built (alias loops)

    def pos(self, mark: Any) -> Position:
        return Position(self.file, mark.line + 1, mark.column + 1)

    def problem(self, mark: Any, message: str, path: DataPath) -> None:
        self.problems.append(Problem(self.pos(mark), message, path))

    def build(self, node: yaml.Node, path: DataPath) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise _TooLarge(node.start_mark, f"more than {MAX_ALIAS_VALUES} values")
        self.values.setdefault(path, self.pos(node.start_mark))
        if isinstance(node, yaml.ScalarNode):
            self.text_budget -= len(node.value)
            if self.text_budget < 0:
                raise _TooLarge(node.start_mark, f"more than {MAX_ALIAS_BYTES >> 20} MiB of text")
            return self._scalar(node, path)
        if len(path) >= MAX_DEPTH:  # deeper through aliases than written
            self.problem(node.start_mark, f"nested deeper than {MAX_DEPTH} levels", path)
            return None
        if id(node) in self._open:
            self.problem(node.start_mark, "an alias may not contain itself", path)
            return None
        self._open.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        finally:
            self._open.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: DataPath) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in self._merged(node, path):
            child = (*path, key.value)
            self.keys[child] = self.pos(key.start_mark)
            if _is_empty(value):  # "key:" with nothing after: point at the key
                self.values[child] = self.keys[child]
            result[key.value] = self.build(value, child)
        return result

    def _merged(self, node: yaml.MappingNode, path: DataPath) -> list[tuple[Any, yaml.Node]]:
        """The key/value pairs of a mapping after ``<<`` merges (own keys win)."""
        own: dict[str, tuple[Any, yaml.Node]] = {}
        merged: dict[str, tuple[Any, yaml.Node]] = {}
        for key, value in node.value:
            if key.tag == _TAG + "merge":
                sources = value.value if isinstance(value, yaml.SequenceNode) else [value]
                for source in sources:
                    if not isinstance(source, yaml.MappingNode):
                        self.problem(source.start_mark, "'<<' merges only mappings", path)
                        continue
                    if id(source) in self._open:
                        self.problem(source.start_mark, "an alias may not contain itself", path)
                        continue
                    if len(self._open) >= MAX_DEPTH:
                        message = f"nested deeper than {MAX_DEPTH} levels"
                        self.problem(source.start_mark, message, path)
                        continue
                    self._open.add(id(source))
                    try:
                        for k, v in self._merged(source, path):
                            merged.setdefault(k.value, (k, v))
                    finally:
                        self._open.discard(id(source))
            elif not isinstance(key, yaml.ScalarNode):
                self.problem(key.start_mark, "a key must be a plain string", path)
            elif key.value in own:
                first = self.pos(own[key.value][0].start_mark)
                self.problem(
                    key.start_mark,
                    f"duplicate key '{key.value}' (first at {first.short()})",
                    (*path, key.value),
                )
            else:
                own[key.value] = (key, value)
        return list({**merged, **own}.values())

    def _scalar(self, node: yaml.ScalarNode, path: DataPath) -> Any:
        if node.tag not in _PLAIN_TAGS:
            self.problem(node.start_mark, f"unsupported YAML tag '{node.tag}'", path)
            return None
        if node.tag == _TAG + "str":
            return self._expand(node, path)
        try:
            value = self._constructor.construct_object(node)
        except (yaml.YAMLError, ValueError) as e:  # ValueError: a timestamp like 2001-13-01
            self.problem(node.start_mark, f"invalid {node.tag.removeprefix(_TAG)}: {e}", path)
            return None
        if isinstance(value, datetime.date):  # YAML 1.1 timestamps are strings here
            return node.value
        return value

    def _expand(self, node: yaml.ScalarNode, path: DataPath) -> Any:
        references = self._references_in(node)
        if not references:
            return node.value
        rule = self.env_rule(path)
        key = (id(node), rule)
        expansion = self._expansions.get(key)
        if expansion is None:
            expansion = self._expansions[key] = self._expansion(node, references, rule)
        self.problems += [Problem(at, message, path) for at, message in expansion.problems]
        self.refused += [(at, path, message) for at, message in expansion.refused]
        if expansion.env is not None:
            self.env[path] = expansion.env
        return expansion.value

    def _references_in(self, node: yaml.ScalarNode) -> list[tuple[re.Match[str], Position]]:
        """The ``${env:…}`` (and ``$${env:…}``) of a string and where each is written."""
        found = self._references.get(id(node))
        if found is None:
            text = node.value
            refs = list(_ENV.finditer(text)) if "${" in text else []
            places = self._places(node, len(refs))
            found = self._references[id(node)] = list(zip(refs, places, strict=True))
        return found

    def _expansion(
        self,
        node: yaml.ScalarNode,
        references: list[tuple[re.Match[str], Position]],
        rule: EnvRule | None,
    ) -> _Expansion:
        text = node.value
        real = [ref for ref, _ in references if not ref.group(1)]
        refused = dict(refusals(rule, text, [ref.span() for ref in real]))
        parts: list[str] = []
        shown: list[str] = []
        read: list[tuple[str, str]] = []
        problems: list[tuple[Position, str]] = []
        refusing: list[tuple[Position, str]] = []
        end = 0
        real_refs = iter(range(len(real)))
        for ref, place in references:
            parts.append(text[end : ref.start()])
            shown.append(parts[-1])
            end = ref.end()
            escaped, name = ref.group(1), ref.group(2)
            if escaped:
                parts.append(ref.group(0)[1:])
                shown.append(parts[-1])
                continue
            shown.append(f"${{env:{name}}}")
            why = refused.get(next(real_refs))
            if why is not None:
                refusing.append((place, why.format(name=name)))
                parts.append(ref.group(0))  # not read: the load fails anyway
            elif not _ENV_NAME.match(name):
                message = f"invalid environment variable name '{name}' in ${{env:…}}"
                problems.append((place, message))
            elif name not in self.environ:
                problems.append((place, f"environment variable '{name}' is not set"))
            else:
                parts.append(self.environ[name])
                read.append((name, self.environ[name]))
        parts.append(text[end:])
        shown.append(parts[-1])
        expanded = "".join(parts)
        if not read:
            return _Expansion(expanded, None, tuple(problems), tuple(refusing))
        value: Any = expanded
        if len(real) == 1 and real[0].span() == (0, len(text)) and node.style in (None, ""):
            value = self._typed(expanded, node)  # one plain reference: typed as YAML would
        env = EnvText(expanded, "".join(shown), tuple(read), not isinstance(value, str))
        return _Expansion(value, env, tuple(problems), tuple(refusing))

    def _typed(self, value: str, node: yaml.ScalarNode) -> Any:
        """A plain scalar's value as YAML would type it had it been written in place."""
        tag = self._resolver.resolve(yaml.ScalarNode, value, (True, False))
        if tag in (_TAG + "str", _TAG + "timestamp") or tag not in _PLAIN_TAGS:
            return value
        try:
            return self._constructor.construct_object(
                yaml.ScalarNode(tag, value, node.start_mark, node.end_mark)
            )
        except (yaml.YAMLError, ValueError):
            return value

    def _places(self, node: yaml.ScalarNode, count: int) -> list[Position]:
        """Where each ``${env:…}`` of a scalar is written; the scalar's start if unsure."""
        start = self._offset(node.start_mark)
        raw = self._text[start : self._offset(node.end_mark)]
        found = [m.start() for m in _ENV.finditer(raw)]
        if len(found) != count:
            return [self.pos(node.start_mark)] * count
        return [self._position(start + offset) for offset in found]

    def _offset(self, mark: Any) -> int:
        """A mark's character offset in the text (YAML counts it; lines are YAML's too)."""
        return int(mark.index)

    def _position(self, offset: int) -> Position:
        line = bisect.bisect_right(self._line_starts, offset) - 1
        return Position(self.file, line + 1, offset - self._line_starts[line] + 1)


def _is_empty(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _TAG + "null" and node.value == ""
