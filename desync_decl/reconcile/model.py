"""What the reconciler passes around: facts, planned actions, what travels, results.

``observe`` returns ``Facts`` (a flat dict that is hashed into the facts
digest, plus kind-private data), ``plan`` an ``Action`` (a verb, a one-line
reason, what travels, an optional diff, what it will produce for later tasks),
``apply`` a ``TaskResult``. Everything here is data; renderers only format it.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from desync_decl.formats.digest import ChunkID
from desync_decl.formats.index import Index
from desync_decl.manifest import Task, TaskAction
from desync_decl.units import counted
from desync_decl.units import human_bytes as human_bytes  # the kinds import it from here

# A kind's types: its manifest action (``MakeAction``, ...) and what its ``observe``
# saw or its ``apply`` needs (``Facts.data``, ``Action.detail``). Covariant: a
# make's ``Action[MakeAction, _Seen]`` is an ``AnyAction`` in a plan's entries.
A_co = TypeVar("A_co", bound=TaskAction, covariant=True)
D_co = TypeVar("D_co", covariant=True)


def chunks(n: int) -> str:
    """``1 chunk``, ``2 chunks``."""
    return counted(n, "chunk")


class Verb(enum.Enum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    NOOP = "no-op"

    @property
    def changes(self) -> bool:
        return self is not Verb.NOOP


class Status(enum.Enum):
    OK = "ok"
    CHANGED = "changed"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class SignedBy:
    """An index's signature as a plan shows it: one a task reads under ``trust``
    (``signer``: whom the trust accepts it as, "principal (ED25519 SHA256:…)"), or
    one a make or tar task with ``sign`` writes (``writes``; ``signer``: the key's
    fingerprint)."""

    index: str  # the index's location
    signer: str
    writes: bool = False
    by_task: str | None = None  # read: the earlier task of this run that signs it (planned)

    def words(self) -> str:
        """``signed by …`` and, for a planned signature, by which task."""
        by = f" (task '{self.by_task}' signs it)" if self.by_task is not None else ""
        return f"signed by {self.signer}{by}"

    def to_json(self) -> dict[str, object]:
        return {
            "index": self.index,
            "signer": self.signer,
            "writes": self.writes,
            "by-task": self.by_task,
        }


@dataclass(frozen=True)
class Facts(Generic[D_co]):
    """What ``observe`` saw. ``digest_fields`` decide the action and its result and
    are what a saved plan is checked against; ``data`` is for ``plan``/``apply``
    (each kind its own type); ``signatures`` the signed indexes it read or writes."""

    digest_fields: Mapping[str, object]
    data: D_co
    signatures: tuple[SignedBy, ...] = ()

    @property
    def digest(self) -> str:
        return facts_digest(self.digest_fields)


def facts_digest(fields: Mapping[str, object], key: bytes | None = None) -> str:
    """``sha256:<hex>`` of the fields as JSON; with ``key`` an HMAC: a saved plan's
    facts may hold values read from ``${env:…}``, and ``Redactor.key`` (made of
    those values) keeps the digest from confirming a guess of them."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str).encode()
    if key is None:
        return "sha256:" + hashlib.sha256(text).hexdigest()
    return "sha256:" + hmac.new(key, text, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Amount:
    chunks: int = 0
    bytes: int = 0

    def __add__(self, other: Amount) -> Amount:
        return Amount(self.chunks + other.chunks, self.bytes + other.bytes)

    def to_json(self) -> dict[str, int]:
        return {"chunks": self.chunks, "bytes": self.bytes}


@dataclass(frozen=True)
class StoreAmount:
    """Chunks read from (or written to) one store of the manifest."""

    name: str  # the manifest's store name
    location: str
    chunks: int
    bytes: int
    role: str = "store"  # "store", or "cache" when a cache's copy serves them
    via: str | None = None  # the cache or group of the manifest it is reached through
    stored_bytes: int | None = None  # as the store holds them: what reading them transfers
    stored_estimated: bool = False  # some stored sizes unknown: counted as plain bytes
    remote: bool = True  # reached over a network (not a directory on this machine)
    stored_sample: int = 0  # an upload's: chunks compressed to estimate ``stored_bytes``

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"store": self.name, "location": self.location, "role": self.role}
        if self.via is not None:
            out["via"] = self.via
        out |= {"chunks": self.chunks, "bytes": self.bytes}
        if self.stored_bytes is not None:
            out |= {
                "stored-bytes": self.stored_bytes,
                "stored-estimated": self.stored_estimated,
                "remote": self.remote,
            }
        if self.stored_sample:
            out["stored-sample"] = self.stored_sample
        return out


@dataclass(frozen=True)
class SeedAmount:
    name: str  # the seed as the manifest names its index
    file: str
    chunks: int
    bytes: int

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "file": self.file, "chunks": self.chunks, "bytes": self.bytes}


@dataclass(frozen=True)
class Deletion:
    name: str
    location: str
    ids: tuple[str, ...]  # hex chunk ids, sorted

    def to_json(self) -> dict[str, object]:
        return {"store": self.name, "location": self.location, "chunks": len(self.ids)} | {
            "ids": list(self.ids)
        }


@dataclass(frozen=True)
class Travel:
    """What will move: the target's bytes by source, chunks to upload or delete.

    Bytes are chunk bytes as the index counts them (uncompressed); a store's
    ``stored_bytes`` are what reading them from it transfers."""

    total: Amount | None = None  # the target (extract) or the chunks concerned
    seeds: tuple[SeedAmount, ...] = ()
    null: Amount | None = None
    self_seed: Amount | None = None
    in_place: Amount | None = None
    stores: tuple[StoreAmount, ...] = ()  # fetched, per serving store
    missing: Amount | None = None  # in no store: apply would fail
    upload: StoreAmount | None = None
    delete: Deletion | None = None
    checked: Amount | None = None  # chunks read to check them (verify)
    entries: Mapping[str, int] | None = None  # untar: directory entries to create, update, ...
    # untar: (path, change, type, file bytes, where a written file's bytes come from:
    # (label, bytes)...) of each entry it creates, updates, fixes the metadata of
    # (``metadata``) or deletes
    changes: tuple[tuple[str, str, str, int, tuple[tuple[str, int], ...]], ...] = ()

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for key, value in (
            ("total", self.total),
            ("null", self.null),
            ("self", self.self_seed),
            ("in-place", self.in_place),
            ("missing", self.missing),
            ("checked", self.checked),
            ("upload", self.upload),
            ("delete", self.delete),
        ):
            if value is not None:
                out[key] = value.to_json()
        if self.seeds:
            out["seeds"] = [s.to_json() for s in self.seeds]
        if self.stores:
            out["stores"] = [s.to_json() for s in self.stores]
        if self.entries is not None:
            out["entries"] = dict(self.entries)
        if self.changes:
            out["changes"] = [
                {"path": p, "change": c, "type": t, "bytes": b, "from": dict(f)}
                for p, c, t, b, f in self.changes
            ]
        return out


@dataclass(frozen=True)
class Diff:
    """Before and after, as short strings per aspect (``--diff``)."""

    target: str
    before: Mapping[str, str]
    after: Mapping[str, str]

    def to_json(self) -> dict[str, object]:
        return {"target": self.target, "before": dict(self.before), "after": dict(self.after)}


@dataclass
class Effects:
    """What an action leaves for later tasks: index files, files holding an
    index's content, chunks added to or removed from stores (by store name)."""

    indexes: dict[str, Index] = field(default_factory=dict)  # location -> index written
    files: dict[str, Index] = field(default_factory=dict)  # path -> content it will hold
    added: dict[str, set[ChunkID]] = field(default_factory=dict)
    removed: dict[str, set[ChunkID]] = field(default_factory=dict)
    signed: dict[str, str] = field(default_factory=dict)  # index location -> public key signing it


@dataclass(frozen=True)
class Action(Generic[A_co, D_co]):
    """What ``plan`` decided for a task of one kind; ``detail`` is that kind's data
    for ``apply`` (keyword-only: every action says what it hands on, None if nothing)."""

    task: Task[A_co]
    verb: Verb
    reason: str  # one line: why this verb
    target: str  # what the task converges (a path, an index, a store)
    facts: Facts[object]
    travel: Travel = field(default_factory=Travel)
    diff: Diff | None = None
    effects: Effects = field(default_factory=Effects)
    notes: tuple[str, ...] = ()  # things worth knowing (a seed that is missing, ...)
    deferred: tuple[str, ...] = ()  # tasks it waits for: planned when they have run
    warnings: tuple[str, ...] = ()  # what went wrong on the way (a failover switch, ...)
    detail: D_co = field(kw_only=True)  # kind-private data for ``apply``


# An action of any kind, as plans, results and reports hold them.
AnyAction = Action[TaskAction, object]


class EntryState(enum.Enum):
    PLANNED = "planned"
    ERROR = "error"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class PlanEntry:
    """One selected task in a plan: its action, or why it has none."""

    task: Task[TaskAction]
    state: EntryState
    action: AnyAction | None = None
    message: str = ""  # the error, or why it is skipped
    depends_on: tuple[str, ...] = ()  # earlier tasks it is ordered after

    @property
    def changes(self) -> bool:
        return self.action is not None and self.action.verb.changes


@dataclass(frozen=True)
class TaskResult:
    task: Task[TaskAction]
    status: Status
    msg: str
    action: AnyAction | None = None
    diff: Diff | None = None
    stats: Mapping[str, object] = field(default_factory=dict)
    seconds: float = 0.0
    warnings: tuple[str, ...] = ()  # failover switches and cache repairs, one line each
