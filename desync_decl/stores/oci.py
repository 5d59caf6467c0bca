"""Chunks and indexes in an OCI registry (``oci+http(s)://registry/repo/path``).

Every chunk is its own artifact: an OCI image manifest with artifactType
``application/vnd.desync.chunk.v1``, the shared empty-JSON config blob and one
layer holding the stored chunk bytes (compressed and/or encrypted as the store's
format says), tagged ``<hexid><ext>``. The tag is the only place the chunk ID
appears, so SHA512/256 IDs and encrypted data fit, and stores of different
formats or keys share a repository without seeing each other. A tag naming any
other kind of artifact is not a chunk: it reads as missing and prune leaves it.

This module is that layout as a store: a chunk key is a tag, and reading or
writing one is the distribution v2 API's manifests by tag, blobs by digest,
monolithic uploads (POST then PUT) and the tag list in pages of 1000, each
operation retried as a whole (``retry.RetryingListableObjects``). How requests
reach the registry (auth, TLS, error mapping) is ``oci_registry``; where
credentials come from is ``oci_auth``.

Indexes live the same way (``open_index_store``): one artifact per index, of
type ``application/vnd.desync.index.v1``, tagged with the index name
(``oci+http://registry/models/indexes/v2.caibx`` is the tag ``v2.caibx`` of
``models/indexes``), its one layer titled with that name so ``oras pull
registry/models/indexes:v2.caibx`` writes the file ``v2.caibx``. A signature is
the artifact tagged ``<name>.sig`` (type ``application/vnd.desync.signature.v1``).

What a registry is asked, and how often: an existence check is a HEAD of the
manifest (``exists``, what a writer asks before uploading); a read's first step
(``size``: what ``compose.locate`` asks when planning a fetch) is a GET of the
manifest, which tells the blob's digest and size. A store opened for a run
(``Opener.remember``: the reconcile layer's stores) remembers every answer, so a
run asks the registry about a chunk once: the plan's GET of a manifest leaves
apply only its blob to fetch, and a chunk the plan found absent (or uploaded
since) is not asked about again. A long-lived process (a chunk server, a mount)
does not remember: a chunk pushed meanwhile must be found.

A registry does not say "no such repository" for a manifest (distribution 2.8
answers ``MANIFEST_UNKNOWN`` whatever the repository), only for its tag list.
So the first read that finds no manifest asks the tag list once: an unknown
repository is a ``StoreError`` naming it, never a missing chunk. A store opened
to be written (``Opener.creating``) skips this: pushing creates a repository,
so an absent one is an empty store.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from desync_decl.formats.digest import ChunkID
from desync_decl.stores.base import Hook, StoreError, no_hook
from desync_decl.stores.index_store import index_of_signature
from desync_decl.stores.objects import (
    ListableObjectChunkStore,
    ListPage,
    ObjectIndexStore,
    ObjectMissing,
    ObjectTooLarge,
    doomed_chunks,
)
from desync_decl.stores.oci_auth import Credentials, credentials
from desync_decl.stores.oci_registry import RegistryHttp
from desync_decl.stores.options import StoreOptions
from desync_decl.stores.retry import RetryingListableObjects, RetryingObjects
from desync_decl.stores.url import mask_credentials

if TYPE_CHECKING:
    from desync_decl.stores.location import Opener

ARTIFACT_TYPE = "application/vnd.desync.chunk.v1"
INDEX_TYPE = "application/vnd.desync.index.v1"
SIGNATURE_TYPE = "application/vnd.desync.signature.v1"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
EMPTY_CONFIG = b"{}"
EMPTY_DESCRIPTOR = {
    "mediaType": "application/vnd.oci.empty.v1+json",
    "digest": "sha256:" + hashlib.sha256(EMPTY_CONFIG).hexdigest(),
    "size": len(EMPTY_CONFIG),
}
LAYER_TYPE = "application/octet-stream"
TITLE = "org.opencontainers.image.title"
MAX_MANIFEST = 4 << 20
TAG_PAGE = 1000
_ACCEPT = ", ".join(
    (
        MANIFEST_TYPE,
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)
_ACCEPT_HEADER = {"Accept": _ACCEPT}
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPO = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_DIGEST = re.compile(r"(sha256|sha512):([0-9a-f]+)")


def open_chunk_store(location: str, options: StoreOptions, opener: Opener) -> OciChunkStore:
    format = options.storage_format()
    registry = RegistryObjects(
        location,
        options,
        credentials(location, opener.config),
        creating=opener.creating,
        remember=opener.remember,
    )
    objects = RetryingListableObjects(registry, options)
    return OciChunkStore(
        objects,
        registry=registry,
        digest=opener.digest,
        format=format,
        skip_verify=options.skip_verify,
    )


def open_index_store(location: str, options: StoreOptions, opener: Opener) -> ObjectIndexStore:
    """Indexes (and their ``.sig``) as artifacts tagged with their names. An absent
    repository holds no index (``IndexMissing``): a make's plan finds none to replace."""
    creds = credentials(location, opener.config)
    registry = RegistryObjects(location, options, creds, kind=_index_or_signature, creating=True)
    return ObjectIndexStore(RetryingObjects(registry, options))


def _index_or_signature(tag: str) -> str:
    """The artifact type of an index store's tag: ``x.caibx.sig`` is a signature."""
    return SIGNATURE_TYPE if index_of_signature(tag) is not None else INDEX_TYPE


def _chunk(tag: str) -> str:
    """The artifact type of every tag of a chunk store."""
    return ARTIFACT_TYPE


class OciChunkStore(ListableObjectChunkStore):
    """The object chunk store with desync's prune: deletions run ``n`` at a time and
    only desync chunk manifests count (another artifact under a chunk tag stays).

    A registry reports no time for a tag and has no place for a lock object (a tag
    holds no ``/``): chunk ages are unknown and no lock is taken, so ``prune`` with
    a minimum age is refused (``ops.prune``) and writers are not held off."""

    objects: RetryingListableObjects
    chunk_ages_known = False
    reclaim_note = (
        "an OCI registry frees the space of deleted chunks only when its own garbage"
        " collection runs (distribution: 'registry garbage-collect CONFIG', with the"
        " registry read-only; hosted registries on their own schedule)"
    )

    def __init__(
        self, objects: RetryingListableObjects, *, registry: RegistryObjects, **kwargs: Any
    ) -> None:
        super().__init__(objects, **kwargs)
        self.registry = registry
        self.locks = None

    def chunk_ages(self) -> Iterator[tuple[ChunkID, float | None]]:
        """The listing prune and verify go by: a repository that does not exist is an
        error (a mistyped path would otherwise hold nothing to prune, all valid),
        unless this store is the one to create it."""
        listed = False
        for entry in super().chunk_ages():
            listed = True
            yield entry
        if not listed:
            self.registry.check_repository()

    def prune(
        self, keep: set[ChunkID], *, older_than: float | None = None, before_delete: Hook = no_hook
    ) -> int:
        doomed = [self.key(id) for id in doomed_chunks(self.chunk_ages(), keep, older_than)]

        def delete(key: str) -> bool | None:
            before_delete()
            return self.objects.delete(key)

        with ThreadPoolExecutor(max(1, self.objects.options.n)) as pool:
            futures = [pool.submit(delete, key) for key in doomed]
            try:
                return sum(1 for f in futures if f.result())
            except BaseException:  # the first failure ends the prune; queued deletions are dropped
                pool.shutdown(cancel_futures=True)
                raise


def parse_location(location: str) -> tuple[str, str]:
    """``oci+https://host[:port]/repo/path`` -> (``https://host[:port]``, ``repo/path``)."""
    url = urllib.parse.urlsplit(location)
    scheme = url.scheme.lower()
    shown = mask_credentials(location)
    if scheme not in ("oci+http", "oci+https") or not url.netloc:
        raise StoreError(f"{shown}: expected oci+http(s)://registry/repository")
    repo = url.path.strip("/")
    if not _REPO.fullmatch(repo):
        hint = " (registries allow only lower case)" if repo != repo.lower() else ""
        raise StoreError(f"{shown}: '{repo}' is not a valid repository name{hint}")
    return f"{scheme[4:]}://{url.netloc}", repo


# What a store remembers of a tag: the blob (digest, size) its manifest names and the
# manifest's digest, PRESENT (a HEAD found it; its blob not known yet) or None (absent).
Blob = tuple[str, int, str]
PRESENT: Blob = ("", -1, "")


class RegistryObjects:
    """The ``ListableObjects`` of a repository: the key ``xxxx/<tag>`` is the artifact
    tagged ``<tag>``; reading it is its manifest, then its one blob. ``kind`` is the
    artifact type a tag must carry (another type under the tag reads as absent);
    ``creating``: an absent repository is an empty one (the store is written to);
    ``remember``: every answer is kept for the store's life (a run's store)."""

    def __init__(
        self,
        location: str,
        options: StoreOptions,
        creds: Credentials,
        *,
        kind: Callable[[str], str] = _chunk,
        creating: bool = False,
        remember: bool = False,
    ) -> None:
        base, self.repo = parse_location(location)
        self.location, self.options, self.kind = mask_credentials(location), options, kind
        self.base = base
        self.http = RegistryHttp(self.location, base, options, creds)
        self._v2 = f"{base}/v2/{self.repo}"
        self._config_pushed = False
        self._config_lock = threading.Lock()
        self._repository: bool | None = True if creating else None  # None: not asked yet
        self._known: dict[str, Blob | None] | None = {} if remember else None
        self._known_lock = threading.Lock()

    def read(self, key: str, limit: int) -> bytes:
        tag = _tag(key)
        blob = self._recalled(tag)
        if blob is None or blob == PRESENT:
            blob = self._blob_of(tag)
        return self._read_blob(tag, blob, limit)

    def exists(self, key: str) -> bool:
        """HEAD of the manifest (no body): a HEAD cannot see an artifact's type, so a
        tag named as desync names chunks counts as one (a read still checks)."""
        tag = _tag(key)
        with self._known_lock:
            if self._known is not None and tag in self._known:
                return self._known[tag] is not None
        response = self.http.request("HEAD", self._manifest_url(tag), headers=_ACCEPT_HEADER)
        with response:
            if response.status_code == 404:
                found = False
            elif response.status_code == 200:
                found = True
            else:
                raise self.http.failure(response, f"manifest {tag}")
        self._remember(tag, PRESENT if found else None, weaker=True)
        return found

    def size(self, key: str) -> int | None:
        """The stored size of the artifact's blob, from its manifest (remembered: a read
        that follows asks only for the blob); None when absent."""
        tag = _tag(key)
        with self._known_lock:
            if self._known is not None and tag in self._known:
                blob = self._known[tag]
                if blob != PRESENT:
                    return None if blob is None else blob[1]
        try:
            return self._blob_of(tag)[1]
        except ObjectMissing:
            return None

    def write(self, key: str, data: bytes | memoryview) -> None:
        tag = _tag(key)
        self._remember(tag, self._write(tag, bytes(data)))

    def delete(self, key: str) -> bool:
        """Delete the manifest tagged ``key`` if it is a desync chunk; True if deleted."""
        tag = _tag(key)
        deleted = self._delete(tag)
        self._remember(tag, None)
        return deleted

    def list_page(self, under: str, cursor: object) -> ListPage:
        """One page of the repository's tags (``cursor``: its URL), each as a key
        ``<tag[:4]>/<tag>`` (no time: the tag list has none); nothing under a folder
        such as ``locks/``."""
        if under:
            return [], None
        url = cursor if isinstance(cursor, str) else f"{self._v2}/tags/list?n={TAG_PAGE}"
        page = self._tags(url)
        if page is None:  # the repository does not exist (yet): no tags
            self._repository = self._repository or False
            return [], None
        self._repository = True
        tags, following = page
        return [(f"{tag[:4]}/{tag}", None) for tag in tags], following

    def close(self) -> None:
        self.http.close()

    def _recalled(self, tag: str) -> Blob | None:
        """The remembered blob of ``tag`` (PRESENT: found, blob unknown); None when
        nothing is remembered; ObjectMissing when it is remembered absent."""
        with self._known_lock:
            if self._known is None or tag not in self._known:
                return None
            blob = self._known[tag]
        if blob is None:
            raise ObjectMissing(tag)
        return blob

    def _remember(self, tag: str, blob: Blob | None, *, weaker: bool = False) -> None:
        """Keep what was learnt of ``tag`` (a run's store); ``weaker`` (a HEAD's answer)
        does not replace a blob already known."""
        with self._known_lock:
            if self._known is None:
                return
            if weaker and self._known.get(tag) not in (None, PRESENT):
                return
            self._known[tag] = blob

    def _blob_of(self, tag: str) -> Blob:
        """The (digest, size) of the one blob of the manifest tagged ``tag``, checked and
        remembered; ObjectMissing (remembered too) when there is no such artifact."""
        try:
            manifest, manifest_digest = self._manifest(tag)
        except ObjectMissing:
            self._remember(tag, None)
            raise
        layers = manifest.get("layers")
        if not isinstance(layers, list) or len(layers) != 1 or not isinstance(layers[0], dict):
            raise StoreError(f"{self.location}: manifest {tag} must reference exactly one blob")
        digest, size = layers[0].get("digest"), layers[0].get("size")
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            raise StoreError(f"{self.location}: manifest {tag} has an invalid digest {digest!r}")
        if not isinstance(size, int) or size < 0:
            raise StoreError(f"{self.location}: manifest {tag} names a blob of size {size!r}")
        blob = (digest, size, manifest_digest)
        self._remember(tag, blob)
        return blob

    def _read_blob(self, tag: str, blob: Blob, limit: int) -> bytes:
        """The blob ``blob`` of ``tag``; one bigger than ``limit`` is refused before it
        is asked for."""
        digest, size, _ = blob
        if size > limit:
            raise ObjectTooLarge(f"{self.location}: blob {digest} of {tag} ({size} bytes)", limit)
        try:
            data, _ = self._get(f"{self._v2}/blobs/{digest}", tag, size, f"blob {digest} of {tag}")
        except ObjectMissing:
            self._remember(tag, None)  # deleted since its manifest was read
            raise
        if len(data) != size or _digest_of(data, digest) != digest:
            raise StoreError(f"{self.location}: blob {digest} of {tag}: content does not match")
        return data

    def _manifest_url(self, tag: str) -> str:
        return f"{self._v2}/manifests/{tag}"

    def _manifest(self, tag: str) -> tuple[dict, str]:
        """The manifest tagged ``tag`` and its digest; ObjectMissing if the tag is
        absent or names another kind of artifact; StoreError if the repository is."""
        what = f"manifest {tag}"
        try:
            body, headers = self._get(
                self._manifest_url(tag), tag, MAX_MANIFEST, what, _ACCEPT_HEADER
            )
        except ObjectMissing:
            self.check_repository()
            raise
        digest = headers.get("Docker-Content-Digest") or _digest_of(body, "sha256:")
        try:
            manifest = json.loads(body)
        except ValueError as e:
            raise StoreError(f"{self.location}: manifest {tag} is not JSON: {e}") from None
        if not isinstance(manifest, dict) or manifest.get("artifactType") != self.kind(tag):
            raise ObjectMissing(tag)
        self._repository = True
        return manifest, digest

    def check_repository(self) -> None:
        """After a manifest was not found: a ``StoreError`` if the repository itself does
        not exist (asked once per store: its tag list; a registry says so only there)."""
        if self._repository is None:
            response = self.http.request("GET", f"{self._v2}/tags/list?n=1")
            with response:
                if response.status_code not in (200, 404):
                    raise self.http.failure(response, "list tags")
                self._repository = response.status_code == 200
        if not self._repository:
            raise StoreError(
                f"{self.location}: the registry {self.base} has no repository '{self.repo}'"
                " (nothing was ever pushed there: is the path right?)"
            )

    def _get(
        self, url: str, tag: str, limit: int, what: str, headers: dict[str, str] | None = None
    ) -> tuple[bytes, Mapping[str, str]]:
        """The body (at most ``limit`` bytes) and headers of a manifest or blob of ``tag``;
        ObjectMissing on 404."""
        response = self.http.request("GET", url, headers=headers or {}, stream=True)
        with response:
            if response.status_code == 404:
                raise ObjectMissing(tag)
            if response.status_code != 200:
                raise self.http.failure(response, what)
            return self.http.read_body(response, limit, what), response.headers

    def _write(self, tag: str, data: bytes) -> Blob:
        """Push ``data`` as the artifact tagged ``tag``; its blob and manifest digests."""
        self._ensure_config()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self._push_blob(data, digest)
        layer = {
            "mediaType": LAYER_TYPE,
            "digest": digest,
            "size": len(data),
            "annotations": {TITLE: tag},
        }
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "artifactType": self.kind(tag),
            "config": EMPTY_DESCRIPTOR,
            "layers": [layer],
            "annotations": {TITLE: tag},
        }
        body = json.dumps(manifest, separators=(",", ":")).encode()
        response = self.http.request(
            "PUT", self._manifest_url(tag), data=body, headers={"Content-Type": MANIFEST_TYPE}
        )
        with response:
            if response.status_code not in (200, 201):
                raise self.http.failure(response, f"push manifest {tag}")
        self._repository = True
        return digest, len(data), _digest_of(body, "sha256:")

    def _ensure_config(self) -> None:
        """The empty config blob every chunk manifest names, pushed once per store."""
        with self._config_lock:
            if self._config_pushed:
                return
            digest = EMPTY_DESCRIPTOR["digest"]
            response = self.http.request("HEAD", f"{self._v2}/blobs/{digest}")
            response.close()
            if response.status_code == 404:
                self._push_blob(EMPTY_CONFIG, str(digest))
            elif response.status_code != 200:
                raise self.http.failure(response, "config blob")
            self._config_pushed = True

    def _push_blob(self, data: bytes, digest: str) -> None:
        """Monolithic upload: POST opens the session, PUT sends all bytes and the digest."""
        response = self.http.request("POST", f"{self._v2}/blobs/uploads/")
        with response:
            if response.status_code != 202 or "Location" not in response.headers:
                raise self.http.failure(response, "start blob upload")
            url = urllib.parse.urljoin(self._v2 + "/", response.headers["Location"])
        url += ("&" if "?" in url else "?") + urllib.parse.urlencode({"digest": digest})
        response = self.http.request(
            "PUT", url, data=data, headers={"Content-Type": "application/octet-stream"}
        )
        with response:
            if response.status_code not in (201, 204):
                raise self.http.failure(response, f"upload blob {digest}")

    def _delete(self, tag: str) -> bool:
        try:
            known = self._recalled(tag)
            digest = known[2] if known and known != PRESENT else self._manifest(tag)[1]
        except ObjectMissing:
            return False
        response = self.http.request("DELETE", f"{self._v2}/manifests/{digest}")
        with response:
            if response.status_code == 404:
                return False
            if response.status_code not in (200, 202, 204):
                raise self.http.failure(response, f"delete manifest {tag}")
        return True

    def _tags(self, url: str) -> tuple[list[str], str | None] | None:
        """One page of tags and the next page's URL (from the ``Link`` header)."""
        response = self.http.request("GET", url)
        with response:
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                raise self.http.failure(response, "list tags")
            try:
                tags = response.json().get("tags") or []
            except (ValueError, AttributeError):
                raise StoreError(f"{self.location}: list tags: not a tag list") from None
            link = response.links.get("next", {}).get("url")
        return [t for t in tags if isinstance(t, str)], (
            urllib.parse.urljoin(url, link) if link else None
        )


def _tag(key: str) -> str:
    tag = key.rpartition("/")[2]
    if not _TAG.fullmatch(tag):
        raise StoreError(f"'{tag}' cannot be an OCI tag")
    return tag


def _digest_of(data: bytes, like: str) -> str:
    """``algorithm:hex`` of ``data`` with the algorithm of the digest ``like``."""
    algorithm = like.partition(":")[0]
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"
