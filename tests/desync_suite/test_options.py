"""desync's ``cmd/desync/options_test.go``: store options from the config file and the flags.

desync merges the flags a command line gave over the config file's
``store-options`` entry for a store (``cmdStoreOptions.MergedWith``); ours is
``common.opener(args).options(location)``, what every verb opens its stores with.
Each case gives a config file and a command line, and asks the options of a store
the config's key ``/store/*/`` matches (``/store/20230901``) and of one it does not
(``/missingStore``). TestServerOptionsValidate's cases run the chunk-server.

Also here: the encryption flags (issue 15), which desync reads in its options code.
"""

from __future__ import annotations

import json
import os

import pytest

from desync_decl.cli import common
from desync_decl.cli.main import build_parser
from desync_decl.stores.converters import Cipher
from desync_decl.stores.options import StoreOptions
from tests.servers_http import cli_server  # noqa: F401 - a fixture

HIT, MISS = "/store/20230901", "/missingStore"
DEFAULT_RETRY, DEFAULT_INTERVAL = 3, 0.5  # desync's DefaultErrorRetry, ...BaseInterval


def options(tmp_path, config: dict, *flags: str) -> tuple[StoreOptions, StoreOptions]:
    """The options of the store the config's key matches, and of one it does not, for
    a command line with ``flags``."""
    path = tmp_path / "desync-options"
    path.write_text(json.dumps({"store-options": {"/store/*/": config}}))
    words = ["--config", str(path), "verify", "-s", HIT, *flags]
    opener = common.opener(build_parser("verify").parse_args(words))
    return opener.options(HIT), opener.options(MISS)


# TestErrorRetryOptions: (name, flags, config entry, retry hit, retry miss,
# interval hit, interval miss); intervals in seconds (the config holds nanoseconds)
ERROR_RETRY_CASES = [
    (
        "Config with the error retry and base interval set",
        [],
        {"error-retry": 20, "error-retry-base-interval": 250_000_000},
        (20, DEFAULT_RETRY, 0.25, DEFAULT_INTERVAL),
    ),
    (
        "Error retry and base interval via command line args",
        ["--error-retry", "10", "--error-retry-base-interval", "1s"],
        {"error-retry": 20, "error-retry-base-interval": 250_000_000},
        (10, 10, 1.0, 1.0),
    ),
    (
        "Config without error retry nor base interval",
        [],
        {"uncompressed": True},
        (DEFAULT_RETRY, DEFAULT_RETRY, DEFAULT_INTERVAL, DEFAULT_INTERVAL),
    ),
    (
        "Config with default error retry and base interval",
        [],
        {"error-retry": 3, "error-retry-base-interval": 500_000_000},
        (DEFAULT_RETRY, DEFAULT_RETRY, DEFAULT_INTERVAL, DEFAULT_INTERVAL),
    ),
    (
        "Config that disables error retry and base interval",
        [],
        {"error-retry": 0, "error-retry-base-interval": 0},
        (0, DEFAULT_RETRY, 0.0, DEFAULT_INTERVAL),
    ),
    (
        "Disables error retry and base interval via command line args",
        ["--error-retry", "0", "--error-retry-base-interval", "0"],
        {"error-retry": 20, "error-retry-base-interval": 250_000_000},
        (0, 0, 0.0, 0.0),
    ),
    (
        "Force the default values via command line args",
        ["--error-retry", "3", "--error-retry-base-interval", "500ms"],
        {"error-retry": 20, "error-retry-base-interval": 750_000_000},
        (DEFAULT_RETRY, DEFAULT_RETRY, DEFAULT_INTERVAL, DEFAULT_INTERVAL),
    ),
]


@pytest.mark.parametrize(
    ("flags", "config", "expected"),
    [case[1:] for case in ERROR_RETRY_CASES],
    ids=[case[0] for case in ERROR_RETRY_CASES],
)
def test_error_retry_options(tmp_path, flags, config, expected):
    """TestErrorRetryOptions."""
    hit, miss = options(tmp_path, config, *flags)
    retry_hit, retry_miss, interval_hit, interval_miss = expected
    assert (hit.error_retry, hit.error_retry_base_interval) == (retry_hit, interval_hit)
    assert (miss.error_retry, miss.error_retry_base_interval) == (retry_miss, interval_miss)


TLS_FILES = {"client-cert": "/foo", "client-key": "/bar", "ca-cert": "/baz"}
# TestStringOptions: (name, flags, config entry, (cert, key, ca) hit, (cert, key, ca) miss)
STRING_CASES = [
    ("Config with options set", [], TLS_FILES, ("/foo", "/bar", "/baz"), ("", "", "")),
    (
        "Configs set via command line args",
        ["--client-cert", "/aa/bb", "--client-key", "/another", "--ca-cert", "/ca"],
        TLS_FILES,
        ("/aa/bb", "/another", "/ca"),
        ("/aa/bb", "/another", "/ca"),
    ),
    (
        "Config without any of those string options set",
        [],
        {"uncompressed": True},
        ("", "", ""),
        ("", "", ""),
    ),
    (
        "Disable values from CLI args",
        ["--client-cert", "", "--client-key", "", "--ca-cert", ""],
        TLS_FILES,
        ("", "", ""),
        ("", "", ""),
    ),
]


def tls_files(o: StoreOptions) -> tuple[str, str, str]:
    """desync's strings: "" where ours is None (not set)."""
    return (o.client_cert or "", o.client_key or "", o.ca_cert or "")


@pytest.mark.parametrize(
    ("flags", "config", "on_hit", "on_miss"),
    [case[1:] for case in STRING_CASES],
    ids=[case[0] for case in STRING_CASES],
)
def test_string_options(tmp_path, flags, config, on_hit, on_miss):
    """TestStringOptions."""
    hit, miss = options(tmp_path, config, *flags)
    assert tls_files(hit) == on_hit
    assert tls_files(miss) == on_miss


# TestTrustInsecureOption: (name, flags, config entry, hit, miss)
TRUST_CASES = [
    ("Config enables trust-insecure, no CLI flag", [], {"trust-insecure": True}, True, False),
    (
        "Config enables trust-insecure, CLI explicitly disables it",
        ["--trust-insecure=false"],
        {"trust-insecure": True},
        False,
        False,
    ),
    (
        "Config without trust-insecure, CLI enables it",
        ["--trust-insecure"],
        {"uncompressed": True},
        True,
        True,
    ),
    ("Config without trust-insecure, no CLI flag", [], {"uncompressed": True}, False, False),
    (
        "Config disables trust-insecure, CLI enables it",
        ["--trust-insecure"],
        {"trust-insecure": False},
        True,
        True,
    ),
]


@pytest.mark.parametrize(
    ("flags", "config", "on_hit", "on_miss"),
    [case[1:] for case in TRUST_CASES],
    ids=[case[0] for case in TRUST_CASES],
)
def test_trust_insecure_option(tmp_path, flags, config, on_hit, on_miss):
    """TestTrustInsecureOption."""
    hit, miss = options(tmp_path, config, *flags)
    assert (hit.trust_insecure, miss.trust_insecure) == (on_hit, on_miss)


# TestServerOptionsValidate, the cases that are errors: (name, flags, what the error names)
SERVER_OPTION_ERRORS = [
    ("key without cert", ["--key", "k"], ("--key", "--cert")),
    ("cert without key", ["--cert", "c"], ("--key", "--cert")),
    ("mutualTLS without TLS", ["--mutual-tls"], ("--mutual-tls", "--cert", "--key")),
    (
        "mutualTLS without clientCA",
        ["--cert", "c", "--key", "k", "--mutual-tls"],
        ("--mutual-tls", "--client-ca"),
    ),
    ("clientCA without TLS", ["--client-ca", "ca"], ("--client-ca",)),
    (
        "clientCA without mutualTLS",
        ["--cert", "c", "--key", "k", "--client-ca", "ca"],
        ("--client-ca", "--mutual-tls"),
    ),
]


@pytest.mark.parametrize(
    ("flags", "named"),
    [case[1:] for case in SERVER_OPTION_ERRORS],
    ids=[case[0] for case in SERVER_OPTION_ERRORS],
)
def test_server_options_validate_refuses(cli, cmd_data, flags, named):
    """TestServerOptionsValidate, the cases desync refuses: one line naming the flags,
    before anything listens (the files named are never read)."""
    r = cli("chunk-server", "-s", cmd_data / "blob1.store", "-l", "127.0.0.1:0", *flags)
    assert r.code == 1
    assert len(r.err.splitlines()) == 1, r.err
    for flag in named:
        assert flag in r.err


def test_server_options_validate_accepts_no_tls(cli_server, cli, cmd_data, tmp_path):  # noqa: F811
    """TestServerOptionsValidate, "no TLS, no mTLS": the server answers over HTTP."""
    server = cli_server("chunk-server", "-s", cmd_data / "blob1.store")
    assert server.url.startswith("http://")
    assert_extracts(cli, cmd_data, tmp_path, server.url)


def test_server_options_validate_accepts_tls(cli_server, cli, cmd_data, tmp_path):  # noqa: F811
    """TestServerOptionsValidate, "TLS only", with desync's test certificates: the
    server answers over HTTPS to a client that trusts desync's test CA."""
    server = cli_server(
        "chunk-server",
        "-s",
        cmd_data / "blob1.store",
        "--cert",
        cmd_data / "server.crt",
        "--key",
        cmd_data / "server.key",
    )
    assert server.url.startswith("https://")
    assert_extracts(cli, cmd_data, tmp_path, server.url, "--ca-cert", cmd_data / "ca.crt")


def test_server_options_validate_accepts_mutual_tls_with_client_ca(
    cli_server,  # noqa: F811
    cli,
    cmd_data,
    tmp_path,
):
    """TestServerOptionsValidate, "TLS with mutualTLS and clientCA": a client with
    desync's test client certificate is served, one without is not."""
    server = cli_server(
        "chunk-server",
        "-s",
        cmd_data / "blob1.store",
        "--cert",
        cmd_data / "server.crt",
        "--key",
        cmd_data / "server.key",
        "--mutual-tls",
        "--client-ca",
        cmd_data / "ca.crt",
    )
    trust = ["--ca-cert", cmd_data / "ca.crt", "-e", "1"]
    client = ["--client-cert", cmd_data / "client.crt", "--client-key", cmd_data / "client.key"]
    assert_extracts(cli, cmd_data, tmp_path, server.url, *trust, *client)
    refused = cli("extract", "-s", server.url, *trust, cmd_data / "blob1.caibx", tmp_path / "no")
    assert refused.code == 1
    assert not (tmp_path / "no").exists()


def assert_extracts(cli, cmd_data, tmp_path, url: str, *flags: object) -> None:
    out = tmp_path / "blob1"
    r = cli("extract", "-s", url, *flags, cmd_data / "blob1.caibx", out)
    assert r.code == 0, r.err
    assert out.read_bytes() == (cmd_data / "blob1").read_bytes()


# --- encryption: what a key or an algorithm given means --------------------------------

KEY = "aa" * 32
OTHER_KEY = "bb" * 32


def test_an_encryption_key_or_algorithm_given_by_flags_implies_encryption(monkeypatch):
    """Issue 15: desync's chunk-server flags ``--encryption-key`` and
    ``--encryption-algorithm`` each imply ``--encryption`` (its wireOpt.Encryption =
    EncryptionConfigured()); the key comes from DESYNC_ENCRYPTION_KEY when only the
    algorithm is given; the environment alone never turns encryption on."""
    monkeypatch.setenv("DESYNC_ENCRYPTION_KEY", OTHER_KEY)

    def cipher_of(**flags: str) -> Cipher | None:
        return StoreOptions(**flags).with_encryption_implied().storage_format().cipher

    by_key = cipher_of(encryption_key=KEY)
    assert by_key is not None
    assert by_key.extension == Cipher("xchacha20-poly1305", KEY).extension
    by_algorithm = cipher_of(encryption_algorithm="aes-256-gcm")
    assert by_algorithm is not None
    assert by_algorithm.extension == Cipher("aes-256-gcm", OTHER_KEY).extension
    assert cipher_of() is None


def test_a_config_key_without_encryption_is_refused_and_nothing_is_written(cli, cmd_data, tmp_path):
    """In the config file desync refuses an ``encryption-key`` (or algorithm) without
    ``encryption: true`` (StoreOptions.StorageConverters); so do we, before anything
    is written: never plaintext when a key was given."""
    store = tmp_path / "store"
    store.mkdir()
    config = tmp_path / "config.json"
    for entry in ({"encryption-key": KEY}, {"encryption-algorithm": "aes-256-gcm"}):
        config.write_text(json.dumps({"store-options": {str(store): entry}}))
        r = cli(
            "--config", config, "chop", "-s", store, cmd_data / "blob1.caibx", cmd_data / "blob1"
        )
        assert r.code == 1
        assert len(r.err.splitlines()) == 1 and "encryption" in r.err, r.err
        assert KEY not in r.err
        assert os.listdir(store) == []
