"""Signed indexes in a run: what a task under ``trust`` reads, what a make or tar
task with ``sign`` writes.

An index and its ``.sig`` are read once per location per run, and judged once per
trust: every task of the run reading that index (an extract and a cache of it, plan
then apply) sees the same bytes and the same verdict, and what was verified is what
is used (the index is decoded from the verified bytes). A task that writes an index
(``forget``) makes the next reader read it again. Trust files and signing keys are
loaded once per run (an ssh-agent key is asked for its public half once).

In a plan, an index an earlier task writes is not there yet: it is judged by the key
that task signs it with (``Trust.check_key``), or refused as unsigned.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from desync_decl.errors import DesyncError
from desync_decl.formats.index import Index
from desync_decl.manifest import TrustDef
from desync_decl.signing import (
    NAMESPACE,
    SignatureRefused,
    Signer,
    SigningKey,
    Trust,
    load_signing_key,
    load_trust,
)
from desync_decl.stores.config import Config
from desync_decl.stores.index_store import SignedIndex
from desync_decl.stores.location import Opener


@dataclass(frozen=True)
class Trusted:
    """An index its trust accepted, and whom as."""

    index: Index
    signer: Signer


class Signatures:
    """The run's signed-index reads, verdicts, trusts and signing keys; safe to use
    from many threads (a location is read by one of them, the others wait)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy: dict[object, threading.Lock] = {}  # one lock per thing being loaded
        self._done: dict[object, object] = {}  # key -> value, or the error it raised

    def _once(self, key: object, load: Callable[[], object]) -> object:
        """``load()`` for ``key`` the first time, its value after (an error it raises
        is not kept: the next caller tries again)."""
        with self._lock:
            busy = self._busy.setdefault(key, threading.Lock())
        with busy:
            with self._lock:
                if key in self._done:
                    return self._done[key]
            value = load()
            with self._lock:
                self._done[key] = value
            return value

    def read(self, location: str, config: Config) -> SignedIndex:
        """The index at ``location`` with its bytes and ``.sig``, read once per run
        (a failed read is tried again by the next reader)."""
        opener = Opener(config=config)
        found = self._once(("read", location), lambda: opener.read_signed_index(location))
        assert isinstance(found, SignedIndex)
        return found

    def forget(self, location: str) -> None:
        """A task of this run wrote the index at ``location`` (and its signature):
        readers after it read the new one."""
        with self._lock:
            for key in [k for k in self._done if isinstance(k, tuple) and k[1] == location]:
                del self._done[key]

    def trust(self, definition: TrustDef) -> Trust:
        found = self._once(
            ("trust", definition),
            lambda: load_trust(
                definition.allowed_signers, definition.signers, definition.revoked_keys
            ),
        )
        return found  # type: ignore[return-value]  # stored by this key only: a Trust

    def key(self, path: Path) -> SigningKey:
        found = self._once(("key", path), lambda: load_signing_key(path))
        return found  # type: ignore[return-value]  # stored by this key only: a SigningKey

    def verified(self, location: str, definition: TrustDef, config: Config) -> Trusted:
        """The index at ``location`` if ``definition`` accepts its signature, else
        ``SignatureRefused`` (one line: the index, why)."""

        def judge() -> Trusted | SignatureRefused:
            signed = self.read(location, config)
            trust = self.trust(definition)
            try:
                return Trusted(
                    signed.index, trust.verify(signed.data, signed.signature, signed.where)
                )
            except SignatureRefused as e:  # a verdict: the same for every reader
                return e

        found = self._once(("verdict", location, definition), judge)
        if isinstance(found, SignatureRefused):
            raise found
        assert isinstance(found, Trusted)
        return found


def signed_with(key: SigningKey, data: bytes, signature: bytes | None) -> bool:
    """Whether ``signature`` is ``key``'s valid signature of ``data`` in our namespace
    (a converged make whose ``.sig`` is missing, stale or by another key signs again)."""
    if signature is None:
        return False
    from desync_decl.signing import sshsig  # it loads cryptography: only for a make with sign

    try:
        decoded = sshsig.decode_armored(signature)
    except DesyncError:
        return False  # damaged, or not an SSH signature: made again
    ours = decoded.namespace == NAMESPACE and decoded.public.openssh == key.public_key
    return ours and decoded.verify(data) is None
