"""desync's ``cmd/desync/location_test.go``: which config keys match which store locations.

desync's ``locationMatch(pattern, location)`` decides which ``store-options`` (and
``oci-credentials``) entry of the config file applies to a store; ours is
``stores.config.location_match``, which ``Config`` uses for every section. Each
case of TestLocationEquality (the POSIX ones) is a row below, and the config file
is asked the same through ``Config.store_options``.
"""

from __future__ import annotations

import pytest

from desync_decl.stores.config import Config, location_match

# TestLocationEquality, in its order: (pattern, location, matches)
CASES = [
    # equal URLs
    ("http://host/path", "http://host/path", True),
    ("http://host/path/", "http://host/path/", True),
    ("http://host/path", "http://host/path/", True),
    ("https://host/", "https://host", True),
    ("https://host", "https://host/", True),
    ("https://host", "https://host", True),
    ("https://host/", "https://host/", True),
    ("s3+https://example.com", "s3+https://example.com", True),
    # equal URLs with globs
    ("https://host/path*", "https://host/path", True),
    ("https://host/path*", "https://host/path/", True),
    ("https://*", "https://example.com", True),
    ("https://example.com/path/*", "https://example.com/path/another", True),
    ("https://example.com/path/*", "https://example.com/path/another/", True),
    ("https://example.com/*/*/", "https://example.com/path/another/", True),
    ("https://example.com/*/", "https://example.com/2022.01/", True),
    ("https://*/*/*", "https://example.com/path/another/", True),
    ("https://example.*", "https://example.com", True),
    ("*://example.com", "https://example.com", True),
    ("http*://example.com", "https://example.com", True),
    ("http*://example.com", "http://example.com", True),
    ("https://exampl?.*", "https://example.com", True),
    ("http://examp??.com", "http://example.com", True),
    ("https://example.com/?", "https://example.com/a", True),
    ("https://example.com/fo[a-z]", "https://example.com/foo", True),
    # not equal URLs
    ("http://host:8080/path", "http://host/path", False),
    ("http://host/path1", "http://host/path", False),
    ("http://host/path1", "http://host/path/", False),
    ("http://host1/path", "http://host2/path", False),
    ("sftp://host/path", "http://host/path", False),
    ("ssh://host/path", "/path", False),
    ("ssh://host/path", "/host/path", False),
    ("ssh://host/path", "/ssh/host/path", False),
    # not equal URLs with globs
    ("*", "https://example.com/path", False),
    ("https://*", "https://example.com/path", False),
    ("https://example.com/*", "https://example.com/path/another", False),
    ("https://example.com/path/*", "https://example.com/path", False),
    ("http://*", "https://example.com", False),
    ("http?://example.com", "http://example.com", False),
    ("https://example.com/123?", "https://example.com/12345", False),
    ("*://example.com", "https://example.com/123", False),
    # equal paths
    ("/path", "/path/../path", True),
    ("//path", "//path", True),
    ("./path", "./path", True),
    ("path", "path/", True),
    ("path/..", ".", True),
    ("//path", "/path", True),  # POSIX: a leading // is /
    # equal paths with globs
    ("/path*", "/path/../path", True),
    ("/path*", "/path_1", True),
    ("/path/*", "/path/to", True),
    ("/path/*", "/path/to/", True),
    ("/path/*/", "/path/to/", True),
    ("/path/*/", "/path/to", True),
    ("/path/to/../*", "/path/another", True),
    ("/*", "/path", True),
    ("*", "path", True),
    ("/pat?", "/path", True),
    ("/pat?/?", "/path/1", True),
    ("path/*", "path/to", True),
    ("path/?", "path/1", True),
    ("?", "a", True),
    # not equal paths
    ("/path", "path", False),
    ("/path/to", "path/to", False),
    ("/path/to", "/path/to/..", False),
    # not equal paths with globs
    ("/path*", "/dir", False),
    ("/path*", "path", False),
    ("/path*", "/path/to", False),
    ("/path/*", "/path", False),
    ("/path/to/../*", "/path/to/another", False),
    ("/pat?", "/pat", False),
    ("/pat?", "/dir", False),
]


@pytest.fixture(autouse=True)
def _in_a_directory_of_our_own(tmp_path, monkeypatch):
    """Relative paths are made absolute against the working directory (as desync
    does): one that is neither ``/`` nor holds a glob character."""
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize(("pattern", "location", "matches"), CASES)
def test_location_equality(pattern, location, matches):
    """TestLocationEquality."""
    assert location_match(pattern, location) is matches


@pytest.mark.parametrize(("pattern", "location", "matches"), CASES)
def test_the_config_file_applies_an_entry_exactly_where_its_key_matches(pattern, location, matches):
    """TestLocationEquality through the config file: a ``store-options`` key
    applies to a store exactly when desync's locationMatch says it matches."""
    config = Config(None, {"store-options": {pattern: {"uncompressed": True}}})
    assert config.store_options(location).uncompressed is matches


def test_a_double_slash_key_is_the_root_path():
    """A config key ``//srv/store`` names the store ``/srv/store`` (and the other way
    round): on POSIX a leading ``//`` is ``/``, as desync's filepath.Abs cleans it."""
    by_double = Config(None, {"store-options": {"//srv/store/": {"uncompressed": True}}})
    assert by_double.store_options("/srv/store").uncompressed
    by_single = Config(None, {"store-options": {"/srv/store": {"uncompressed": True}}})
    assert by_single.store_options("//srv/store").uncompressed
    assert by_single.store_options("///srv//store/").uncompressed


def test_a_malformed_glob_matches_nothing():
    """desync's path.Match refuses an unclosed ``[``: the key never matches (and other
    keys still do: TestGetOCICredentials' ``oci+https://bad.example.com/[repo``)."""
    assert not location_match("https://example.com/[repo", "https://example.com/[repo")
    assert not location_match("/srv/[store", "/srv/[store")
