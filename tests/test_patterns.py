"""Include/exclude patterns follow rsync's rules (``archive/patterns.py``), and a bad
pattern is a one-line error naming where it was written."""

from __future__ import annotations

import pytest

from desync_decl.archive.patterns import Patterns
from desync_decl.errors import DesyncError

TREE = [  # (path, is_dir)
    ("config.json", False),
    ("tokenizer", True),
    ("tokenizer/vocab.json", False),
    ("tokenizer/merges.txt", False),
    ("shards", True),
    ("shards/s1.bin", False),
    ("shards/s1.bin.tmp", False),
    ("shards/old", True),
    ("shards/old/s0.bin", False),
    ("cache", True),
    ("cache/x", False),
    ("sub", True),
    ("sub/cache", False),
    ("sub/config.json", False),
]


def kept(include: list[str], exclude: list[str]) -> list[str]:
    patterns = Patterns.parse(include, exclude, "test")
    return [path for path, is_dir in TREE if patterns.allows(path, is_dir)]


def test_no_patterns_keep_everything() -> None:
    assert kept([], []) == [path for path, _ in TREE]
    assert Patterns.parse([], [], "test").empty


def test_a_pattern_without_slash_matches_the_last_component_at_any_depth() -> None:
    assert "shards/s1.bin.tmp" not in kept([], ["*.tmp"])
    assert kept([], ["*.tmp"]) == [p for p, _ in TREE if p != "shards/s1.bin.tmp"]


def test_star_stops_at_slash_and_double_star_does_not() -> None:
    assert kept([], ["shards/*.bin"]) == [p for p, _ in TREE if p != "shards/s1.bin"]
    assert "shards/old/s0.bin" not in kept([], ["shards/**.bin"])
    assert "shards/s1.bin" not in kept([], ["shards/**.bin"])


def test_leading_slash_anchors_at_the_root() -> None:
    dropped = set(p for p, _ in TREE) - set(kept([], ["/config.json"]))
    assert dropped == {"config.json"}  # not sub/config.json
    dropped = set(p for p, _ in TREE) - set(kept([], ["config.json"]))
    assert dropped == {"config.json", "sub/config.json"}


def test_trailing_slash_matches_directories_only_and_excludes_all_below() -> None:
    dropped = set(p for p, _ in TREE) - set(kept([], ["cache/"]))
    assert dropped == {"cache", "cache/x"}  # the file sub/cache stays


def test_an_excluded_directory_excludes_its_contents_whatever_the_includes_say() -> None:
    assert "shards/old/s0.bin" not in kept(["*.bin"], ["old"])


def test_includes_are_checked_before_excludes_whatever_the_order() -> None:
    only_json = kept(["*/", "*.json"], ["*"])
    assert only_json == [
        "config.json",
        "tokenizer",
        "tokenizer/vocab.json",
        "shards",
        "shards/old",
        "cache",
        "sub",
        "sub/config.json",
    ]
    # without the directory include, '*' drops the directories and all below them
    assert kept(["*.json"], ["*"]) == ["config.json"]


def test_triple_star_keeps_a_directory_and_everything_below_it() -> None:
    assert kept(["/tokenizer/***"], ["*"]) == [
        "tokenizer",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
    ]


def test_classes_and_escapes() -> None:
    assert "shards/s1.bin" not in kept([], ["s[0-9].bin"])
    assert "shards/s1.bin" in kept([], ["s[!0-9].bin"])
    patterns = Patterns.parse([], ["\\*.txt"], "test")
    assert not patterns.allows("*.txt", False)
    assert patterns.allows("a.txt", False)


@pytest.mark.parametrize(
    ("include", "exclude", "message"),
    [
        ([], ["[a-"], "--exclude: bad pattern '[a-'"),
        ([], [""], "--exclude: bad pattern '': empty"),
        ([], ["/"], "names the root"),
        ([], ["a/../b"], "'.' and '..' never match"),
        ([], ["a//b"], "'//' never matches"),
        (["*.json"], [], "has no effect without an exclude pattern"),
    ],
)
def test_a_bad_pattern_is_one_line_naming_where(
    include: list[str], exclude: list[str], message: str
) -> None:
    with pytest.raises(DesyncError) as caught:
        Patterns.parse(include, exclude, "--exclude" if exclude else "--include")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_patterns_read_back_as_written() -> None:
    patterns = Patterns.parse(["*/"], ["*.tmp"], "test")
    assert patterns.as_json() == {"include": ["*/"], "exclude": ["*.tmp"]}
    assert patterns.describe() == "include '*/'; exclude '*.tmp'"
