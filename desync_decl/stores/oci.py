"""Chunks in an OCI registry (``oci+http(s)://registry/repo/path``), as desync stores them.

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
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import urllib.parse
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from desync_decl.formats.digest import ChunkID
from desync_decl.stores.base import Hook, StoreError, no_hook
from desync_decl.stores.objects import (
    ListableObjectChunkStore,
    ListPage,
    ObjectMissing,
    ObjectTooLarge,
    doomed_chunks,
)
from desync_decl.stores.oci_auth import Credentials, credentials
from desync_decl.stores.oci_registry import RegistryHttp
from desync_decl.stores.options import StoreOptions
from desync_decl.stores.retry import RetryingListableObjects
from desync_decl.stores.url import mask_credentials

if TYPE_CHECKING:
    from desync_decl.stores.location import Opener

ARTIFACT_TYPE = "application/vnd.desync.chunk.v1"
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
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPO = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_DIGEST = re.compile(r"(sha256|sha512):([0-9a-f]+)")


def open_chunk_store(location: str, options: StoreOptions, opener: Opener) -> OciChunkStore:
    format = options.storage_format()
    registry = RegistryObjects(location, options, credentials(location, opener.config))
    objects = RetryingListableObjects(registry, options)
    return OciChunkStore(
        objects, digest=opener.digest, format=format, skip_verify=options.skip_verify
    )


class OciChunkStore(ListableObjectChunkStore):
    """The object chunk store with desync's prune: deletions run ``n`` at a time and
    only desync chunk manifests count (another artifact under a chunk tag stays).

    A registry reports no time for a tag and has no place for a lock object (a tag
    holds no ``/``): chunk ages are unknown and no lock is taken, so ``prune`` with
    a minimum age is refused (``ops.prune``) and writers are not held off."""

    objects: RetryingListableObjects
    chunk_ages_known = False

    def __init__(self, objects: RetryingListableObjects, **kwargs: Any) -> None:
        super().__init__(objects, **kwargs)
        self.locks = None

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


class RegistryObjects:
    """The ``ListableObjects`` of a repository: the key ``xxxx/<tag>`` is the artifact
    tagged ``<tag>``; reading it is its manifest, then its one blob."""

    def __init__(self, location: str, options: StoreOptions, creds: Credentials) -> None:
        base, self.repo = parse_location(location)
        self.location, self.options = mask_credentials(location), options
        self.http = RegistryHttp(self.location, base, options, creds)
        self._v2 = f"{base}/v2/{self.repo}"
        self._config_pushed = False
        self._config_lock = threading.Lock()

    def read(self, key: str, limit: int) -> bytes:
        return self._read(_tag(key), limit)

    def exists(self, key: str) -> bool:
        try:
            self._manifest(_tag(key))
        except ObjectMissing:
            return False
        return True

    def write(self, key: str, data: bytes | memoryview) -> None:
        self._write(_tag(key), bytes(data))

    def delete(self, key: str) -> bool:
        """Delete the manifest tagged ``key`` if it is a desync chunk; True if deleted."""
        return self._delete(_tag(key))

    def list_page(self, under: str, cursor: object) -> ListPage:
        """One page of the repository's tags (``cursor``: its URL), each as a key
        ``<tag[:4]>/<tag>`` (no time: the tag list has none); nothing under a folder
        such as ``locks/``."""
        if under:
            return [], None
        url = cursor if isinstance(cursor, str) else f"{self._v2}/tags/list?n={TAG_PAGE}"
        page = self._tags(url)
        if page is None:  # the repository does not exist (yet): no tags
            return [], None
        tags, following = page
        return [(f"{tag[:4]}/{tag}", None) for tag in tags], following

    def close(self) -> None:
        self.http.close()

    def _read(self, tag: str, limit: int) -> bytes:
        """The one blob of the manifest tagged ``tag``; a blob the manifest says is
        bigger than ``limit`` is refused before it is asked for."""
        manifest, _ = self._manifest(tag)
        layers = manifest.get("layers")
        if not isinstance(layers, list) or len(layers) != 1 or not isinstance(layers[0], dict):
            raise StoreError(f"{self.location}: manifest {tag} must reference exactly one blob")
        digest, size = layers[0].get("digest"), layers[0].get("size")
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            raise StoreError(f"{self.location}: manifest {tag} has an invalid digest {digest!r}")
        if not isinstance(size, int) or size < 0:
            raise StoreError(f"{self.location}: manifest {tag} names a blob of size {size!r}")
        if size > limit:
            raise ObjectTooLarge(f"{self.location}: blob {digest} of {tag} ({size} bytes)", limit)
        data, _ = self._get(f"{self._v2}/blobs/{digest}", tag, size, f"blob {digest} of {tag}")
        if len(data) != size or _digest_of(data, digest) != digest:
            raise StoreError(f"{self.location}: blob {digest} of {tag}: content does not match")
        return data

    def _manifest(self, tag: str) -> tuple[dict, str]:
        """The chunk manifest tagged ``tag`` and its digest; ObjectMissing if the tag
        is absent or names another kind of artifact."""
        url, what = f"{self._v2}/manifests/{tag}", f"manifest {tag}"
        body, headers = self._get(url, tag, MAX_MANIFEST, what, headers={"Accept": _ACCEPT})
        digest = headers.get("Docker-Content-Digest") or _digest_of(body, "sha256:")
        try:
            manifest = json.loads(body)
        except ValueError as e:
            raise StoreError(f"{self.location}: manifest {tag} is not JSON: {e}") from None
        if not isinstance(manifest, dict) or manifest.get("artifactType") != ARTIFACT_TYPE:
            raise ObjectMissing(tag)
        return manifest, digest

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

    def _write(self, tag: str, data: bytes) -> None:
        self._ensure_config()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self._push_blob(data, digest)
        layer = {"mediaType": LAYER_TYPE, "digest": digest, "size": len(data)}
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "artifactType": ARTIFACT_TYPE,
            "config": EMPTY_DESCRIPTOR,
            "layers": [layer],
            "annotations": {TITLE: tag},
        }
        response = self.http.request(
            "PUT",
            f"{self._v2}/manifests/{tag}",
            data=json.dumps(manifest, separators=(",", ":")).encode(),
            headers={"Content-Type": MANIFEST_TYPE},
        )
        with response:
            if response.status_code not in (200, 201):
                raise self.http.failure(response, f"push manifest {tag}")

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
            _, digest = self._manifest(tag)
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
