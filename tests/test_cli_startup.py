"""Start-up: a command line imports what its verb needs, nothing more.

Start-up time is part of every command's wall time (casync starts in a few ms).
Timings are not asserted here (the machine's load decides them); what decides
start-up is what gets imported, and that is checked in a fresh interpreter:
``--help`` imports no verb's module, and no verb imports a store backend's
library (boto3, requests, paramiko, ...) or the manifest's (jsonschema, yaml)
before it uses one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from desync_decl.cli.main import VERBS

# Runs main() with argv[2:] and writes the names of the modules imported by then
# to the file argv[1].
PROBE = textwrap.dedent(
    """
    import json, sys
    from desync_decl.cli.main import main
    try:
        main(sys.argv[2:])
    except SystemExit:
        pass
    with open(sys.argv[1], "w") as f:
        json.dump(sorted(sys.modules), f)
    """
)
BACKEND_LIBRARIES = (
    "boto3",
    "botocore",
    "requests",
    "urllib3",
    "paramiko",
    "google",
    "nacl",
    "cryptography",
)
MANIFEST_LIBRARIES = ("jsonschema", "yaml")
MANIFEST_VERBS = {"validate", "schema", "plan", "apply"}


def imported(tmp_path: Path, *argv: object) -> set[str]:
    """Every module imported by ``desync-decl ARGV`` in a fresh interpreter."""
    out = tmp_path / "modules.json"
    subprocess.run(
        [sys.executable, "-c", PROBE, str(out), *map(str, argv)],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    return set(json.loads(out.read_text()))


def packages(modules: set[str], names: tuple[str, ...] | set[str]) -> set[str]:
    """The modules that are ``names`` or inside them."""
    return {m for m in modules if any(m == n or m.startswith(n + ".") for n in names)}


def test_help_imports_no_verb_no_engine_and_no_library(tmp_path):
    modules = imported(tmp_path, "--help")
    verb_modules = {f"desync_decl.cli.{v.arguments.split(':')[0]}" for v in VERBS.values()}
    engine = {
        f"desync_decl.{p}"
        for p in ("stores", "ops", "formats", "assemble", "manifest", "reconcile", "archive")
    } | {"desync_decl.server", "desync_decl.mount", "desync_decl.chunker"}
    assert packages(modules, verb_modules) == set()
    assert packages(modules, engine) == set()
    libraries = (*BACKEND_LIBRARIES, *MANIFEST_LIBRARIES, "zstandard", "_cffi_backend")
    assert packages(modules, libraries) == set()


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_a_verbs_help_imports_no_backend_library(tmp_path, verb):
    modules = imported(tmp_path, verb, "--help")
    assert packages(modules, BACKEND_LIBRARIES) == set()
    if verb not in MANIFEST_VERBS:
        assert packages(modules, MANIFEST_LIBRARIES) == set()


def test_verbs_on_a_local_store_import_no_backend_library(tmp_path):
    """... nor the signing package's crypto (cryptography) without a signing flag:
    the verbs that read an index under trust import it only when trust is asked for."""
    blob = tmp_path / "blob"
    blob.write_bytes(bytes(range(256)) * 1024)
    store, index = tmp_path / "store", tmp_path / "blob.caibx"
    for argv in (
        ("make", "-s", store, index, blob),
        ("info", "-s", store, index),
        ("extract", "-s", store, index, tmp_path / "out"),
        ("cat", "-s", store, index, tmp_path / "cat.out"),
        ("verify-index", index, blob),
    ):
        modules = imported(tmp_path, *argv)
        assert packages(modules, (*BACKEND_LIBRARIES, *MANIFEST_LIBRARIES)) == set(), argv
    assert (tmp_path / "out").read_bytes() == blob.read_bytes()


def test_extract_without_a_seed_to_reindex_imports_no_chunker(tmp_path):
    """Extract only decodes and writes: the chunker (a C extension through cffi) and
    ``make`` are loaded when a seed must be re-indexed, not by every extraction. (cffi's
    backend is: the planner finds repeated chunks in C, ``desync_decl.repeats``, to plan
    a large image in 5 bytes per chunk; loading it costs under 2 ms.)"""
    blob = tmp_path / "blob"
    blob.write_bytes(bytes(range(256)) * 1024)
    store, index = tmp_path / "store", tmp_path / "blob.caibx"
    imported(tmp_path, "make", "-s", store, index, blob)
    modules = imported(tmp_path, "extract", "-s", store, index, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == blob.read_bytes()
    unused = ("desync_decl.chunker", "desync_decl._chunker_cffi", "desync_decl.ops.make")
    assert packages(modules, unused) == set()
    assert "desync_decl._repeats_cffi" in modules


def test_apply_on_a_local_store_imports_no_backend_library(tmp_path):
    (tmp_path / "blob").write_bytes(bytes(range(256)) * 1024)
    (tmp_path / "m.yaml").write_text(
        textwrap.dedent(
            """
            version: 1
            stores:
              local: {url: store}
            tasks:
              - name: chunk
                make: {source: blob, index: blob.caibx, store: local}
              - name: copy
                extract: {index: blob.caibx, path: copy, stores: [local]}
            """
        )
    )
    argv = ("apply", "--state-dir", tmp_path / "state", tmp_path / "m.yaml")
    unused_kinds = {
        f"desync_decl.reconcile.kinds.{k}"
        for k in ("chop", "cache", "prune", "verify", "tar", "untar")
    }
    for _ in range(2):  # changed, then converged
        modules = imported(tmp_path, *argv)
        assert packages(modules, BACKEND_LIBRARIES) == set()
        assert packages(modules, unused_kinds) == set()  # a kind is loaded by its tasks
    assert (tmp_path / "copy").read_bytes() == (tmp_path / "blob").read_bytes()


# What a verb on a LOCAL store (or a plain catar) leaves unloaded: the wrappers of
# other commands (failover groups, caches, retries), the key/value backends' common
# layer, the store lock of the writers and prune, the signing vocabulary, the config
# file's patterns (globs: tar and untar filter with them), and the other verbs'
# operations sharing its cli module.
NOT_FOR_A_LOCAL_STORE = (
    "desync_decl.stores.objects",
    "desync_decl.stores.retry",
    "desync_decl.stores.compose",
    "desync_decl.stores.tally",
    "desync_decl.stores.lru",
    "desync_decl.signing.common",
)
# tar encodes a directory: no decoder (nor its C leaf decoder), no tar input
NOT_FOR_TAR = (
    "desync_decl.ops.untar",
    "desync_decl.ops.mtree",
    "desync_decl.formats.catar.decoder",
    "desync_decl.catar_leaves",
    "desync_decl.archive.tar_source",
)
NOT_LOADED = {
    # nothing on extract's path logs: logging is loaded by what logs (cli/logs.py)
    "extract": (
        *NOT_FOR_A_LOCAL_STORE,
        "desync_decl.stores.store_lock",
        "desync_decl.globs",
        "logging",
    ),
    "make": (*NOT_FOR_A_LOCAL_STORE, "desync_decl.globs"),
    "tar": (*NOT_FOR_A_LOCAL_STORE, *NOT_FOR_TAR, "desync_decl.stores.location"),
    "tar -i": (*NOT_FOR_A_LOCAL_STORE, *NOT_FOR_TAR),
    "untar": (
        *NOT_FOR_A_LOCAL_STORE,
        "desync_decl.stores.location",
        "desync_decl.stores.config",
        "desync_decl.stores.local",
        "desync_decl.formats.catar.encoder",
        "desync_decl.chunker",
        "desync_decl.ops.tar",
        "desync_decl.archive.seed",
        "desync_decl.archive.switch",
        "desync_decl.archive.tar_writer",
    ),
    "untar -i": (
        *NOT_FOR_A_LOCAL_STORE,
        "desync_decl.stores.store_lock",
        "desync_decl.formats.catar.encoder",
        "desync_decl.chunker",
        "desync_decl.ops.tar",
        "desync_decl.archive.seed",
        "desync_decl.archive.tar_writer",
    ),
}


def test_the_hot_verbs_on_a_local_store_load_only_what_they_use(tmp_path):
    """make, extract, tar and untar (-i or not) are what a machine runs most, each a
    fresh process whose imports are part of its time (casync starts in a few ms):
    none loads the modules of what it does not do."""
    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True)
    blob = tree / "d" / "blob"
    blob.write_bytes(bytes(range(256)) * 1024)
    store, index = tmp_path / "store", tmp_path / "blob.caibx"
    runs = {
        "make": ("make", "-s", store, index, blob),
        "extract": ("extract", "-s", store, index, tmp_path / "out"),
        "tar": ("tar", tmp_path / "t.catar", tree),
        "tar -i": ("tar", "-i", "-s", store, tmp_path / "t.caidx", tree),
        "untar": ("untar", tmp_path / "t.catar", tmp_path / "u1"),
        "untar -i": ("untar", "-i", "-s", store, tmp_path / "t.caidx", tmp_path / "u2"),
    }
    # what the interpreter loads before any of ours (site's .pth files): not the verb's
    bare = subprocess.run(
        [sys.executable, "-c", "import json, sys; print(json.dumps(sorted(sys.modules)))"],
        check=True,
        capture_output=True,
        text=True,
    )
    before = set(json.loads(bare.stdout))
    for name, argv in runs.items():
        modules = imported(tmp_path, *argv) - before
        assert packages(modules, NOT_LOADED[name]) == set(), name
    assert (tmp_path / "out").read_bytes() == blob.read_bytes()
    for untarred in ("u1", "u2"):
        assert (tmp_path / untarred / "d" / "blob").read_bytes() == blob.read_bytes()


def test_records_logged_once_logging_is_loaded_mid_verb_reach_the_console(tmp_path):
    """logging is loaded by what logs, after the verb started (cli/logs.py): the
    console's handler is attached then, so a record is written as before: with
    --debug in its format (level and logger), without it once, as its message. The
    record: make warns before uploading into a store holding another key's chunks."""
    store = tmp_path / "store"

    def make(key: str, n: int, *flags: str) -> subprocess.CompletedProcess[str]:
        config = tmp_path / f"config-{n}.json"
        entry = {"encryption": True, "encryption-key": key}
        config.write_text(json.dumps({"store-options": {str(store): entry}}))
        blob = tmp_path / f"blob-{n}"
        blob.write_bytes(bytes([n]) * 200_000 + bytes(range(256)) * 400)
        argv = [*flags, "--config", config, "make", "-s", store, tmp_path / f"{n}.caibx", blob]
        done = subprocess.run(
            [sys.executable, "-m", "desync_decl", *map(str, argv)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done

    assert make("a1" * 32, 0).stderr == ""
    plain, debug = make("b2" * 32, 1), make("b2" * 32, 2, "--debug")
    warned = [line for line in plain.stderr.splitlines() if "already holds chunks" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: "), plain.stderr
    assert "WARNING:desync_decl.stores.keys:warning: " in debug.stderr, debug.stderr


def test_the_program_collects_again_after_loading_its_verb(tmp_path):
    """The program loads its verb's modules with the collector off, then keeps them in
    its permanent generation (cli/main.py): the collector must be on again for the
    verb, which may run for days (a chunk-server, a mount)."""
    probe = textwrap.dedent(
        """
        import gc, json, sys
        from desync_decl.cli.main import main
        sys.argv = ["desync-decl", "config"]
        status = main()
        print(json.dumps([status, gc.isenabled(), gc.get_freeze_count() > 0]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True, cwd=tmp_path
    )
    assert json.loads(done.stdout.splitlines()[-1]) == [0, True, True]
