"""Boolean flags spelled as desync's (Go's) flag parser reads them, for every parser.

In Go a boolean flag is true when given bare (``-t``) and takes a value only
attached with ``=``, in any spelling ``strconv.ParseBool`` accepts
(``--trust-insecure=false``, ``-r=0``, ``--yes=T``); the next word is never its
value, and the last occurrence wins. argparse has no such flag: a ``store_true``
flag refuses ``=false``. Rather than each verb declaring its flags differently,
``for_argparse`` rewrites a command line, before argparse reads it, into words
argparse reads with Go's meaning:

- ``--flag=VALUE`` (or ``-f=VALUE``) of a flag that takes no value: true is the
  bare flag; false is the hidden option ``_FALSE`` naming the flag, which sets
  the flag's opposite where it stands, so the last occurrence still wins;
- ``-abc``, a cluster of one-letter boolean flags: split, each read as above.

A value that is no boolean is a usage error naming the flag.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

TRUE_SPELLINGS = frozenset({"1", "t", "T", "TRUE", "true", "True"})
FALSE_SPELLINGS = frozenset({"0", "f", "F", "FALSE", "false", "False"})

# The hidden option a false flag becomes. No command line can hold a NUL, so only
# the rewriting produces it, and no abbreviation a user types can match it.
_FALSE = "--\0false"


def parse_bool(text: str) -> bool:
    """Go's ``strconv.ParseBool``: the type of a flag whose value is a boolean."""
    if text in TRUE_SPELLINGS:
        return True
    if text in FALSE_SPELLINGS:
        return False
    raise argparse.ArgumentTypeError(f"'{text}' is not a boolean (true or false, 1 or 0, t or f)")


def for_argparse(parser: argparse.ArgumentParser, words: Sequence[str]) -> list[str]:
    """``words`` as argparse must read them for ``parser``'s boolean flags to mean
    what they mean in Go. A parser with sub-commands rewrites only the words before
    the sub-command's name: the sub-command's parser rewrites the rest."""
    options = _options(parser)
    commands = any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
    out: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word == "--":  # everything after it is an argument, not a flag
            out.append(word)
            break
        if not word.startswith("-") or word == "-":
            out.append(word)
            if commands:  # the sub-command's name: the rest is its parser's
                break
            continue
        for flag in _split_cluster(word, options):
            out.extend(_rewritten(parser, flag, options))
        if _value_follows(word, options) and i < len(words) and not words[i].startswith("-"):
            out.append(words[i])  # its value, not a flag nor the sub-command
            i += 1
    return out + list(words[i:])


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Every option string of ``parser`` and the action it names."""
    return {s: a for a in parser._actions for s in a.option_strings}


def _resolve(name: str, options: dict[str, argparse.Action]) -> argparse.Action | None:
    """The action ``name`` means: exactly, or a long option's unique abbreviation
    (argparse's rule: ``--trust`` is ``--trust-insecure``)."""
    if name in options:
        return options[name]
    if name.startswith("--") and len(name) > 2:
        meant = {a for s, a in options.items() if s.startswith(name)}
        if len(meant) == 1:
            return meant.pop()
    return None


def _takes_no_value(action: argparse.Action) -> bool:
    """A flag that sets a value when given bare (store_true, store_false, store_const)."""
    return isinstance(action, argparse._StoreConstAction) and action.nargs == 0


def _is_boolean(action: argparse.Action | None) -> bool:
    return action is not None and _takes_no_value(action)


def _split_cluster(word: str, options: dict[str, argparse.Action]) -> list[str]:
    """``-kr=false`` as ``-k``, ``-r=false`` when every letter is a boolean flag (as
    pflag reads a cluster); any other word as it is."""
    if word.startswith("--"):
        return [word]
    letters, equals, value = word[1:].partition("=")
    if len(letters) < 2 or not all(_is_boolean(options.get(f"-{c}")) for c in letters):
        return [word]
    return [f"-{c}" for c in letters[:-1]] + [f"-{letters[-1]}{equals}{value}"]


def _rewritten(
    parser: argparse.ArgumentParser, word: str, options: dict[str, argparse.Action]
) -> list[str]:
    """One flag as argparse must read it."""
    name, equals, value = word.partition("=")
    action = _resolve(name, options)
    if action is None or not _is_boolean(action):
        return [word]
    canonical = action.option_strings[0]
    if not equals:
        return [word]
    try:
        true = parse_bool(value)
    except argparse.ArgumentTypeError as e:
        parser.error(f"argument {'/'.join(action.option_strings)}: {e}")
    if true:
        return [canonical]
    _add_false_option(parser, options)
    return [f"{_FALSE}={canonical}"]


def _value_follows(word: str, options: dict[str, argparse.Action]) -> bool:
    """Whether the word after ``word`` is its value (a value option given without
    ``=``), which must not be read as a flag or as the sub-command's name."""
    if "=" in word:
        return False
    action = _resolve(word, options)
    return action is not None and action.nargs != 0


def _add_false_option(parser: argparse.ArgumentParser, options: dict[str, argparse.Action]) -> None:
    """Give ``parser`` the hidden option a false flag becomes (once)."""
    if _FALSE not in options:
        options[_FALSE] = parser.add_argument(
            _FALSE, action=_SetFalse, flags=options, default=argparse.SUPPRESS
        )


class _SetFalse(argparse.Action):
    """``_FALSE=FLAG``: what ``FLAG=false`` means, set where it stands on the line.

    For a flag that sets a boolean, its opposite (``-t=false`` is an explicit false,
    which overrides the config file; ``--no-x=false`` is true). For a flag that
    picks one of several modes (``--skip-invalid-seeds``), its mode is undone: the
    setting goes back to the parser's default if that flag had set it, and stays
    otherwise.
    """

    def __init__(
        self, option_strings: list[str], dest: str, flags: dict[str, argparse.Action], **kw: Any
    ) -> None:
        super().__init__(option_strings, argparse.SUPPRESS, help=argparse.SUPPRESS, **kw)
        self.flags = flags

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        flag = self.flags[str(values)]
        if isinstance(flag.const, bool):
            setattr(namespace, flag.dest, not flag.const)
        elif getattr(namespace, flag.dest, None) == flag.const:
            setattr(namespace, flag.dest, parser.get_default(flag.dest))
