"""Boolean flags as desync's (Go's) flag parser reads them, for every verb.

desync is a Go program: each of its boolean flags is true when given bare (``-t``)
and takes a value only attached with ``=``, in any spelling ``strconv.ParseBool``
accepts (``--trust-insecure=false``, ``-r=0``, ``--yes=T``); the next word is never
its value, and the last occurrence wins. desync's own tests rely on it
(``cmd/desync/options_test.go``, TestTrustInsecureOption:
``--trust-insecure=false``); these tests hold every boolean flag of every verb to
it, walking the parsers, so a flag added later is held to it too.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from desync_decl.cli import common
from desync_decl.cli.main import VERBS, build_parser

TRUE_SPELLINGS = ("1", "t", "T", "TRUE", "true", "True")
FALSE_SPELLINGS = ("0", "f", "F", "FALSE", "false", "False")


def verb_parser(verb: str) -> argparse.ArgumentParser:
    """The sub-parser of ``verb`` (what reads everything after the verb's name)."""
    top = build_parser(verb)
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[verb]


def is_boolean(action: argparse.Action) -> bool:
    """A flag that takes no value (help and version aside: they act, they hold no
    setting)."""
    if not action.option_strings or isinstance(
        action, argparse._HelpAction | argparse._VersionAction
    ):
        return False
    return action.nargs == 0


def boolean_flags() -> Iterator[tuple[str, str, str]]:
    """(verb, the flag's first option string, one of its option strings) for every
    boolean flag of every verb."""
    for verb in VERBS:
        for action in verb_parser(verb)._actions:
            if is_boolean(action):
                for spelling in action.option_strings:
                    yield verb, action.option_strings[0], spelling


def required_words(parser: argparse.ArgumentParser) -> list[str]:
    """The fewest words the verb parses: a word for each required positional and
    required option (their values are never looked at here)."""
    words: list[str] = []
    for action in parser._actions:
        if action.option_strings:
            if action.required:
                words += [action.option_strings[0], "x"]
        elif action.nargs in (None, "+"):
            words.append(str(action.choices[0]) if action.choices else "x")
        elif isinstance(action.nargs, int):
            words += ["x"] * action.nargs
    return words


def parsed(verb: str, *flags: str) -> argparse.Namespace:
    return build_parser(verb).parse_args([verb, *required_words(verb_parser(verb)), *flags])


def dest_of(verb: str, flag: str) -> str:
    return next(a.dest for a in verb_parser(verb)._actions if flag in a.option_strings)


def test_every_verb_has_boolean_flags_to_check():
    """The walk below finds the flags it is meant to check (a walk that found none
    would pass without checking anything)."""
    found = {(verb, flag) for verb, flag, _ in boolean_flags()}
    assert ("chop", "-t") in found
    assert ("extract", "-r") in found and ("extract", "-k") in found
    assert ("prune", "-y") in found
    assert ("chunk-server", "--skip-verify-read") in found
    assert len(found) > 50


@pytest.mark.parametrize(("verb", "flag", "spelling"), list(boolean_flags()))
def test_every_boolean_flag_takes_true_and_false_as_go_spells_them(verb, flag, spelling):
    """TestTrustInsecureOption's ``--trust-insecure=false``, asked of every boolean
    flag of every verb in each of its spellings: ``=true`` (any of Go's spellings) is
    the bare flag, ``=false`` its opposite."""
    dest = dest_of(verb, flag)
    without = getattr(parsed(verb), dest)
    given = getattr(parsed(verb, spelling), dest)
    for text in TRUE_SPELLINGS:
        assert getattr(parsed(verb, f"{spelling}={text}"), dest) == given, text
    # false: the opposite of the bare flag when it sets a boolean; else (a flag that
    # picks one of several modes) the setting it would have had without the flag
    expected = (not given) if isinstance(given, bool) else without
    for text in FALSE_SPELLINGS:
        assert getattr(parsed(verb, f"{spelling}={text}"), dest) == expected, text
    # and the last occurrence wins, as in Go
    assert getattr(parsed(verb, f"{spelling}=false", spelling), dest) == given
    assert getattr(parsed(verb, spelling, f"{spelling}=false"), dest) == expected


def test_false_overrides_a_config_file_that_says_true(tmp_path):
    """``-t=false`` is a setting, not the absence of one: it wins over the config file
    (what TestTrustInsecureOption asks of ``--trust-insecure=false``)."""
    config = tmp_path / "config.json"
    config.write_text('{"store-options": {"/s/": {"trust-insecure": true}}}')

    def trusted(*flags: str) -> bool:
        words = ["--config", str(config), "verify", "-s", "/s", *flags]
        return common.opener(build_parser("verify").parse_args(words)).options("/s").trust_insecure

    assert trusted() is True
    assert trusted("-t=0") is False
    assert trusted("-t=0", "-t") is True


def test_a_flag_that_takes_a_boolean_never_takes_the_next_word():
    """``-r`` bare is true and the word after it is the verb's argument, as in Go."""
    args = parsed("extract", "-r")
    assert args.cache_repair is True
    args = build_parser("extract").parse_args(["extract", "-s", "S", "-r", "INDEX", "OUT"])
    assert (args.cache_repair, args.index, args.output) == (True, "INDEX", "OUT")


def test_clusters_of_single_letter_flags_split_as_in_go():
    """``-kr=false``: ``-k`` true, ``-r`` false (pflag's reading of a cluster)."""
    args = parsed("extract", "-kr=false")
    assert (args.in_place, args.cache_repair) == (True, False)


def test_the_global_debug_flag_too():
    assert build_parser("schema").parse_args(["--debug=false", "schema"]).debug is False
    assert build_parser("schema").parse_args(["--debug=1", "schema"]).debug is True


@pytest.mark.parametrize("word", ["-t=maybe", "--trust-insecure=", "--trust-insecure=yes", "-r=2"])
def test_a_value_go_refuses_is_a_one_line_usage_error(cli, capsys, tmp_path, word):
    r = cli("extract", "-s", tmp_path / "store", word, tmp_path / "i.caibx", tmp_path / "out")
    err = capsys.readouterr().err
    assert r.code == 1
    assert len(err.splitlines()) == 1, err
    assert "error" in err and word.partition("=")[2] in err
    assert not (tmp_path / "out").exists()
