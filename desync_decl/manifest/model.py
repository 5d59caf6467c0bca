"""The typed manifest: frozen dataclasses built from data that passed validation.

Values are ready to use: local paths are absolute (relative ones are taken
from the manifest's folder, ``~`` is expanded), locations that are URLs are
kept as written, sizes are bytes, durations seconds, modes integers, chunk
sizes ``ChunkSizes`` with the defaults applied. Every definition and task
keeps the ``Position`` it was written at, for later error messages;
``Manifest.position_of`` finds any other key or value. ``Manifest.redactor``
hides the values read from ``${env:…}`` in whatever is shown of a run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from desync_decl.formats import flags as ff
from desync_decl.formats.chunk_sizes import DEFAULT_CHUNK_SIZES, ChunkSizes
from desync_decl.manifest.convert import local_path, location, parse_duration, parse_mode
from desync_decl.manifest.loader import Document
from desync_decl.manifest.problems import DataPath, Position
from desync_decl.manifest.sensitive import NO_SECRETS, Redactor
from desync_decl.stores.options import StoreOptions
from desync_decl.units import parse_size

KINDS = ("make", "extract", "chop", "cache", "prune", "verify", "tar", "untar")
DEFAULT_CONCURRENCY = 8
TIME_FEATURES = ff.WITH_SEC_TIME | ff.WITH_USEC_TIME | ff.WITH_NSEC_TIME | ff.WITH_2SEC_TIME
# manifest option name -> StoreOptions field
_OPTION_FIELDS = {"retries": "error_retry", "retry_interval": "error_retry_base_interval"}
_OPTION_FIELDS |= {"connections": "n"}
_OPTION_PATHS = ("ca_cert", "client_cert", "client_key")


@dataclass(frozen=True)
class TrustDef:
    """Whose signatures a task accepts on the indexes it reads (``trust:``): an index
    without a valid ``<index>.sig`` by one of them is refused before a chunk is fetched.
    Kept as written (paths resolved); ``reconcile`` loads it once per run."""

    allowed_signers: Path
    signers: tuple[str, ...] = ()  # principals accepted; empty: any of the file's
    revoked_keys: Path | None = None
    position: Position = field(default=Position(""), compare=False)


@dataclass(frozen=True)
class Defaults:
    chunk_size: ChunkSizes = DEFAULT_CHUNK_SIZES
    concurrency: int = DEFAULT_CONCURRENCY
    trust: TrustDef | None = None  # for trusting kinds that set none of their own


@dataclass(frozen=True)
class StoreDef:
    name: str
    url: str  # a URL, or an absolute local directory
    # StoreOptions fields the manifest sets; not in repr: may hold secrets from ${env:…}
    options: Mapping[str, Any] = field(hash=False, repr=False)
    position: Position = field(compare=False)

    def store_options(self, base: StoreOptions | None = None) -> StoreOptions:
        """``base`` (e.g. from desync's config file) with this manifest's options on top."""
        merged = (base or StoreOptions()).with_overrides(**self.options)
        return merged.checked(f"{self.position}: store '{self.name}'")


@dataclass(frozen=True)
class GroupDef:
    name: str
    failover: tuple[str, ...]  # store, group or cache names, in order of preference
    position: Position = field(compare=False)


@dataclass(frozen=True)
class CacheDef:
    name: str
    store: str  # store, group or cache behind the cache
    cache: str  # store keeping the copies
    max_size: int | None  # bytes; None = no limit
    repair: bool
    position: Position = field(compare=False)


DEFAULT_HANDLER_TIMEOUT = 300.0  # seconds


@dataclass(frozen=True)
class HandlerDef:
    """A command run once after an apply in which a task notifying it changed."""

    name: str
    command: tuple[str, ...]  # argv: no shell
    timeout: float  # seconds
    position: Position = field(compare=False)


@dataclass(frozen=True)
class MakeAction:
    source: Path
    index: str
    store: str
    chunk_size: ChunkSizes  # defaults.chunk_size unless the task sets its own
    sign: Path | None = None  # the key signing the index (``<index>.sig``); None: unsigned


@dataclass(frozen=True)
class Seed:
    file: Path
    index: str  # <file>.caibx unless given


@dataclass(frozen=True)
class ExtractAction:
    index: str | None  # None only with state "absent"
    path: Path
    stores: tuple[str, ...]
    seeds: tuple[Seed, ...] = ()
    in_place: bool = False
    mode: int | None = None
    owner: str | int | None = None
    group: str | int | None = None
    backup: bool = False
    pin: str | None = None  # "sha512-256:<hex>": refuse an index with another digest
    invalid_seeds: str = "regenerate"  # a seed not matching its index: regenerate, skip or fail
    state: str = "present"  # "absent": the file and its record are removed
    trust: TrustDef | None = None  # the task's, else defaults.trust; None: not checked


@dataclass(frozen=True)
class ChopAction:
    index: str
    source: Path
    store: str
    trust: TrustDef | None = None


@dataclass(frozen=True)
class CacheAction:
    indexes: tuple[str, ...]
    stores: tuple[str, ...]
    cache: str  # the store to fill
    trust: TrustDef | None = None


@dataclass(frozen=True)
class PruneAction:
    store: str
    keep: tuple[str, ...]  # index paths or globs (never empty)
    min_age: float = 3600.0  # seconds: younger chunks stay (another machine may be publishing)


@dataclass(frozen=True)
class VerifyAction:
    store: str
    repair: bool = False


@dataclass(frozen=True)
class TarAction:
    source: Path  # a directory
    index: str
    store: str
    chunk_size: ChunkSizes  # defaults.chunk_size unless the task sets its own
    features: int  # the archive's "with" bits after with, without and no_time
    one_file_system: bool = False
    sign: Path | None = None  # as MakeAction.sign
    include: tuple[str, ...] = ()  # rsync patterns (archive/patterns.py), checked at load
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class UntarAction:
    index: str | None  # None only with state "absent"
    path: Path  # the directory
    stores: tuple[str, ...]
    seeds: tuple[Path, ...] = ()  # directories
    no_same_owner: bool = False
    no_same_permissions: bool = False
    delete_extra: bool = False
    atomic: bool = False  # built beside and switched in one rename (``archive.switch``)
    pin: str | None = None
    state: str = "present"  # "absent": the tree and its record are removed
    trust: TrustDef | None = None
    include: tuple[str, ...] = ()  # rsync patterns: what is left out is neither
    exclude: tuple[str, ...] = ()  # written nor deleted (archive/patterns.py)


TaskAction = (
    MakeAction
    | ExtractAction
    | ChopAction
    | CacheAction
    | PruneAction
    | VerifyAction
    | TarAction
    | UntarAction
)

A_co = TypeVar("A_co", bound=TaskAction, covariant=True)


@dataclass(frozen=True)
class Task(Generic[A_co]):
    """A task of the manifest: ``Task[MakeAction]`` a make, ``Task[TaskAction]`` any."""

    name: str
    kind: str  # one of KINDS: the action's key in the manifest
    action: A_co
    tags: tuple[str, ...]
    index: int  # place in the task list, from 0
    position: Position = field(compare=False)
    notify: tuple[str, ...] = ()  # handlers to run after the apply if this task changed


@dataclass(frozen=True)
class Manifest:
    path: Path
    base_dir: Path  # relative paths in the manifest start here
    version: int
    defaults: Defaults
    stores: Mapping[str, StoreDef] = field(hash=False)
    groups: Mapping[str, GroupDef] = field(hash=False)
    caches: Mapping[str, CacheDef] = field(hash=False)
    tasks: tuple[Task[TaskAction], ...]
    positions: Mapping[DataPath, Position] = field(hash=False, compare=False, repr=False)
    key_positions: Mapping[DataPath, Position] = field(hash=False, compare=False, repr=False)
    redactor: Redactor = field(default=NO_SECRETS, hash=False, compare=False, repr=False)
    handlers: Mapping[str, HandlerDef] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )

    def source(self, name: str) -> StoreDef | GroupDef | CacheDef:
        """The store, group or cache called ``name`` (names are unique across the three)."""
        for section in (self.stores, self.groups, self.caches):
            if name in section:
                return section[name]
        raise KeyError(name)

    def position_of(self, path: DataPath) -> Position:
        """Where a value (or its nearest parent) was written: ``("tasks", 2, "extract")``."""
        for n in range(len(path), -1, -1):
            if path[:n] in self.positions:
                return self.positions[path[:n]]
        return Position(str(self.path))

    def key_position_of(self, path: DataPath) -> Position:
        """Where the key naming ``path`` was written (the value's place for list items)."""
        return self.key_positions.get(path) or self.position_of(path)

    def field_position(self, task: Task, *keys: str | int) -> Position:
        """Where a field of a task's action was written: ``field_position(t, "path")``."""
        return self.position_of(("tasks", task.index, task.kind, *keys))


def build(doc: Document, path: Path, base_dir: Path) -> Manifest:
    """The model of a document that passed schema and semantic checks."""
    data: dict[str, Any] = doc.data
    raw = data.get("defaults") or {}
    b = _Builder(doc, base_dir, Defaults())
    defaults = Defaults(
        ChunkSizes.parse(raw["chunk_size"]) if "chunk_size" in raw else DEFAULT_CHUNK_SIZES,
        raw.get("concurrency", DEFAULT_CONCURRENCY),
        b.trust(raw["trust"], ("defaults", "trust")) if raw.get("trust") else None,
    )
    b.defaults = defaults
    return Manifest(
        path=path,
        base_dir=base_dir,
        version=data["version"],
        defaults=defaults,
        stores=b.section("stores", b.store),
        groups=b.section("groups", b.group),
        caches=b.section("caches", b.cache),
        tasks=tuple(b.task(i, t) for i, t in enumerate(data.get("tasks") or [])),
        positions=MappingProxyType(doc.values),
        key_positions=MappingProxyType(doc.keys),
        redactor=Redactor.of(doc.env, base_dir),
        handlers=b.section("handlers", b.handler),
    )


class _Builder:
    def __init__(self, doc: Document, base_dir: Path, defaults: Defaults) -> None:
        self.doc, self.base_dir, self.defaults = doc, base_dir, defaults
        self.at: DataPath = ()  # the action being built: ("tasks", i, kind)

    def section(self, name: str, make: Any) -> Mapping[str, Any]:
        entries = self.doc.data.get(name) or {}
        return MappingProxyType(
            {key: make(key, value, self.doc.key_at((name, key))) for key, value in entries.items()}
        )

    def store(self, name: str, raw: dict[str, Any], at: Position) -> StoreDef:
        options: dict[str, Any] = {}
        for key, value in (raw.get("options") or {}).items():
            if key in ("timeout", "retry_interval", "error_retry_base_interval"):
                value = parse_duration(value)
            elif key in _OPTION_PATHS:
                value = str(local_path(value, self.base_dir))
            options[_OPTION_FIELDS.get(key, key)] = value
        return StoreDef(name, location(raw["url"], self.base_dir), MappingProxyType(options), at)

    def group(self, name: str, raw: dict[str, Any], at: Position) -> GroupDef:
        return GroupDef(name, tuple(raw["failover"]), at)

    def cache(self, name: str, raw: dict[str, Any], at: Position) -> CacheDef:
        size = parse_size(raw["max_size"]) if "max_size" in raw else None
        return CacheDef(name, raw["store"], raw["cache"], size, raw.get("repair", False), at)

    def handler(self, name: str, raw: dict[str, Any], at: Position) -> HandlerDef:
        timeout = parse_duration(raw["timeout"]) if "timeout" in raw else DEFAULT_HANDLER_TIMEOUT
        return HandlerDef(name, tuple(raw["command"]), timeout, at)

    def task(self, i: int, raw: dict[str, Any]) -> Task[TaskAction]:
        kind = next(k for k in KINDS if k in raw)
        self.at = ("tasks", i, kind)
        action: TaskAction = getattr(self, f"_{kind}")(raw[kind])
        return Task(
            raw["name"],
            kind,
            action,
            tuple(raw.get("tags", ())),
            i,
            self.doc.at(("tasks", i)),
            tuple(raw.get("notify", ())),
        )

    def _trust(self, a: dict[str, Any]) -> TrustDef | None:
        """The task's own trust (``null``: none), else the default's."""
        if "trust" not in a:
            return self.defaults.trust
        return self.trust(a["trust"], (*self.at, "trust"))

    def _sign(self, a: dict[str, Any]) -> Path | None:
        return self._path(a["sign"]["key"]) if "sign" in a else None

    def trust(self, raw: dict[str, Any] | None, at: DataPath) -> TrustDef | None:
        if raw is None:
            return None
        revoked = raw.get("revoked_keys")
        return TrustDef(
            self._path(raw["allowed_signers"]),
            tuple(raw.get("signers", ())),
            self._path(revoked) if revoked is not None else None,
            self.doc.at(at),
        )

    def _loc(self, text: str) -> str:
        return location(text, self.base_dir)

    def _path(self, text: str) -> Path:
        return local_path(text, self.base_dir)

    def _make(self, a: dict[str, Any]) -> MakeAction:
        sizes = ChunkSizes.parse(a["chunk_size"]) if "chunk_size" in a else None
        return MakeAction(
            self._path(a["source"]),
            self._loc(a["index"]),
            a["store"],
            sizes or self.defaults.chunk_size,
            self._sign(a),
        )

    def _extract(self, a: dict[str, Any]) -> ExtractAction:
        return ExtractAction(
            index=self._loc(a["index"]) if "index" in a else None,
            path=self._path(a["path"]),
            stores=tuple(a.get("stores", ())),
            seeds=tuple(self._seed(s) for s in a.get("seeds", ())),
            in_place=a.get("in_place", False),
            mode=parse_mode(a["mode"]) if "mode" in a else None,
            owner=a.get("owner"),
            group=a.get("group"),
            backup=a.get("backup", False),
            pin=a.get("pin"),
            invalid_seeds=a.get("invalid_seeds", "regenerate"),
            state=a.get("state", "present"),
            trust=self._trust(a),
        )

    def _seed(self, raw: str | dict[str, str]) -> Seed:
        file = raw if isinstance(raw, str) else raw["file"]
        index = raw.get("index") if isinstance(raw, dict) else None
        return Seed(self._path(file), self._loc(index or file + ".caibx"))

    def _chop(self, a: dict[str, Any]) -> ChopAction:
        return ChopAction(
            self._loc(a["index"]), self._path(a["source"]), a["store"], self._trust(a)
        )

    def _cache(self, a: dict[str, Any]) -> CacheAction:
        indexes = tuple(self._loc(i) for i in a["indexes"])
        return CacheAction(indexes, tuple(a["stores"]), a["cache"], self._trust(a))

    def _prune(self, a: dict[str, Any]) -> PruneAction:
        keep = tuple(self._loc(k) for k in a["keep"])
        if "min_age" in a:
            return PruneAction(a["store"], keep, parse_duration(a["min_age"]))
        return PruneAction(a["store"], keep)

    def _verify(self, a: dict[str, Any]) -> VerifyAction:
        return VerifyAction(a["store"], a.get("repair", False))

    def _tar(self, a: dict[str, Any]) -> TarAction:
        # imported here: loading a manifest without tar tasks need not load the catar codec
        from desync_decl.formats.catar.features import DESYNC_TAR, parse_features

        sizes = ChunkSizes.parse(a["chunk_size"]) if "chunk_size" in a else None
        features = parse_features(list(a.get("with", ())), list(a.get("without", ())), DESYNC_TAR)
        if a.get("no_time", False):
            features &= ~TIME_FEATURES
        return TarAction(
            self._path(a["source"]),
            self._loc(a["index"]),
            a["store"],
            sizes or self.defaults.chunk_size,
            features,
            a.get("one_file_system", False),
            self._sign(a),
            tuple(a.get("include", ())),
            tuple(a.get("exclude", ())),
        )

    def _untar(self, a: dict[str, Any]) -> UntarAction:
        return UntarAction(
            index=self._loc(a["index"]) if "index" in a else None,
            path=self._path(a["path"]),
            stores=tuple(a.get("stores", ())),
            seeds=tuple(self._path(s) for s in a.get("seeds", ())),
            no_same_owner=a.get("no_same_owner", False),
            no_same_permissions=a.get("no_same_permissions", False),
            delete_extra=a.get("delete_extra", False),
            atomic=a.get("atomic", False),
            pin=a.get("pin"),
            state=a.get("state", "present"),
            trust=self._trust(a),
            include=tuple(a.get("include", ())),
            exclude=tuple(a.get("exclude", ())),
        )
