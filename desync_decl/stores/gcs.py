"""Google Cloud Storage chunk and index stores: ``gs://bucket[/prefix]``.

Keys are laid out as on S3 (``prefix/xxxx/<id><ext>``, indexes ``prefix/<name>``).
Credentials are Google's application defaults (``GOOGLE_APPLICATION_CREDENTIALS``,
``gcloud auth application-default login``, the metadata server), as desync.

To use an emulator (gcp-storage-emulator, fake-gcs-server) set
``STORAGE_EMULATOR_HOST=http://127.0.0.1:PORT``: google-cloud-storage then sends
every request there, unauthenticated (anonymous credentials, no project), and
never asks the metadata server.

The library's own retries are off (``retry=None``) so ``error-retry`` counts
attempts through ``retry.RetryingObjects``, as for S3 and HTTP; ``timeout`` applies to each
request; the connection pool holds ``n`` connections. A download goes into a
sink that refuses more than the caller's limit, which ends the download there
(the library closes the response, and with it the connection).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import google.api_core.exceptions as gx
import google.auth.exceptions as auth_errors
import requests
import requests.adapters
from google.cloud import storage

from desync_decl.stores.base import StoreError
from desync_decl.stores.objects import (
    ListableObjectChunkStore,
    ListPage,
    ObjectIndexStore,
    ObjectMissing,
    ObjectTooLarge,
)
from desync_decl.stores.options import StoreOptions
from desync_decl.stores.retry import RetryingListableObjects
from desync_decl.stores.url import mask_credentials

try:  # google-cloud-storage >= 3 vendors its media layer
    from google.cloud.storage.exceptions import DataCorruption
except ImportError:  # pragma: no cover - older releases
    from google.resumable_media import DataCorruption

if TYPE_CHECKING:
    from desync_decl.stores.location import Opener

T = TypeVar("T")

_TRANSIENT_STATUS = {408, 429}
_TRANSIENT_ERRORS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    auth_errors.TransportError,
    DataCorruption,
)


def parse_location(location: str) -> tuple[str, str]:
    """Bucket and key prefix (``""`` or ``"dir/sub/"``) of a ``gs://`` URL."""
    url = urlsplit(location)
    if url.scheme.lower() != "gs" or not url.netloc:
        raise StoreError(f"{mask_credentials(location)}: not a gs://bucket[/prefix] location")
    prefix = url.path.strip("/")
    return url.netloc, prefix + "/" if prefix else ""


class GCSObjects:
    """Objects in one bucket under one prefix (``ListableObjects`` for the object stores)."""

    def __init__(self, location: str, options: StoreOptions) -> None:
        self.location, self.options = mask_credentials(location), options
        bucket, self.prefix = parse_location(location)
        self._client = _client(self.location, options)
        self._bucket = self._client.bucket(bucket)
        self._bucket_seen = False  # once the bucket is known to exist, a 404 is the object's

    def read(self, key: str, limit: int) -> bytes:
        blob = self._bucket.blob(self.prefix + key)

        def download() -> bytes:
            sink = _BoundedSink(limit, f"{self.location}: {key}")
            blob.download_to_file(sink, timeout=self.options.timeout, retry=None)
            return sink.data()

        try:
            return self._call(f"cannot read {key} from", download)
        except ObjectMissing:
            self._require_bucket(f"cannot read {key} from")
            raise

    def exists(self, key: str) -> bool:
        blob = self._bucket.blob(self.prefix + key)
        found = self._call(
            f"cannot check {key} in",
            lambda: blob.exists(timeout=self.options.timeout, retry=None),
        )
        if not found:
            self._require_bucket(f"cannot check {key} in")
        return found

    def write(self, key: str, data: bytes | memoryview) -> None:
        """One upload: GCS shows an object only once it is complete."""
        blob = self._bucket.blob(self.prefix + key)
        kind = "application/zstd" if key.endswith(".cacnk") else "application/octet-stream"
        try:
            self._call(
                f"cannot write {key} to",
                lambda: blob.upload_from_string(
                    bytes(data), content_type=kind, timeout=self.options.timeout, retry=None
                ),
            )
        except ObjectMissing:  # an upload's 404 can only be the bucket's
            raise self._no_bucket(f"cannot write {key} to") from None

    def delete(self, key: str) -> None:
        blob = self._bucket.blob(self.prefix + key)
        with contextlib.suppress(ObjectMissing):
            self._call(
                f"cannot delete {key} from",
                lambda: blob.delete(timeout=self.options.timeout, retry=None),
            )

    def list_page(self, under: str, cursor: object) -> ListPage:
        """One page (``cursor``: its page token), with each object's ``updated`` time."""
        try:
            entries, token = self._call(
                "cannot list", lambda: self._page(self.prefix + under, cursor)
            )
        except ObjectMissing:
            raise self._no_bucket("cannot list") from None
        return [(name[len(self.prefix) :], updated) for name, updated in entries], token or None

    def close(self) -> None:
        self._client.close()

    def _page(
        self, prefix: str, token: object
    ) -> tuple[list[tuple[str, float | None]], str | None]:
        pages = self._client.list_blobs(
            self._bucket,
            prefix=prefix,
            page_token=token,
            timeout=self.options.timeout,
            retry=None,
        )
        page = next(pages.pages)
        entries = [(blob.name, blob.updated and blob.updated.timestamp()) for blob in page]
        return entries, pages.next_page_token

    def _require_bucket(self, what: str) -> None:
        """A 404 says "no such object" and "no such bucket" alike: ask about the
        bucket once, so a store whose bucket is gone fails instead of looking empty."""
        if self._bucket_seen:
            return

        def probe() -> bool:
            try:
                return bool(self._bucket.exists(timeout=self.options.timeout, retry=None))
            except gx.Forbidden:  # may read objects but not the bucket: trust the 404
                return True

        if not self._call(what, probe):
            raise self._no_bucket(what)
        self._bucket_seen = True

    def _no_bucket(self, what: str) -> StoreError:
        return StoreError(f"{what} {self.location}: bucket {self._bucket.name} does not exist")

    def _call(self, what: str, call: Callable[[], T]) -> T:
        """``call()`` with its errors mapped (transient ones marked, for retries)."""
        try:
            return call()
        except gx.NotFound:
            raise ObjectMissing() from None
        except gx.GoogleAPICallError as e:
            status = e.code or 0
            if status in (401, 403):
                raise StoreError(
                    f"{what} {self.location}: access denied: {status}: {e.message};"
                    " check the Google application default credentials"
                ) from None
            transient = status in _TRANSIENT_STATUS or status >= 500
            raise StoreError(
                f"{what} {self.location}: {status} {e.message}", transient=transient
            ) from None
        except requests.exceptions.SSLError as e:  # retrying does not fix a certificate
            raise StoreError(f"{what} {self.location}: {e}") from None
        except _TRANSIENT_ERRORS as e:
            raise StoreError(f"{what} {self.location}: {e}", transient=True) from None
        except (requests.exceptions.RequestException, auth_errors.GoogleAuthError) as e:
            raise StoreError(f"{what} {self.location}: {e}") from None


class _BoundedSink:
    """A file for ``download_to_file`` that refuses (``ObjectTooLarge``) to take more
    than ``limit`` bytes, which stops the download."""

    def __init__(self, limit: int, where: str) -> None:
        self.limit, self.where = limit, where
        self.parts: list[bytes] = []
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.size > self.limit:
            raise ObjectTooLarge(self.where, self.limit)
        self.parts.append(bytes(data))
        return len(data)

    def data(self) -> bytes:
        return b"".join(self.parts)


def _client(location: str, options: StoreOptions) -> Any:
    """A storage client whose session pools ``n`` connections and verifies TLS as told."""
    try:
        client = storage.Client()
    except auth_errors.GoogleAuthError as e:
        raise StoreError(f"{location}: no usable Google credentials: {e}") from None
    # google-cloud-storage >= 3.10 fetches each bucket's metadata in a background
    # thread to decorate trace spans: an extra request we neither need nor retry.
    if getattr(client, "_bucket_metadata_cache", None) is not None:
        client._bucket_metadata_cache = None
    verify: bool | str | None = None  # None: requests' default (verify, $REQUESTS_CA_BUNDLE)
    if options.ca_cert:
        verify = options.ca_cert
    elif options.trust_insecure:
        verify = False
    adapter = _Adapter(verify, pool_connections=max(1, options.n), pool_maxsize=max(1, options.n))
    session = client._http  # an AuthorizedSession (requests), created on first use
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return client


class _Adapter(requests.adapters.HTTPAdapter):
    """A pool that applies the store's TLS verification to every request.

    Setting ``Session.verify`` is not enough: requests lets $REQUESTS_CA_BUNDLE
    or $CURL_CA_BUNDLE override it (requests issue #3829)."""

    def __init__(self, verify: bool | str | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.verify = verify

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]  # hands every argument on unchanged
        if self.verify is not None:
            kwargs["verify"] = self.verify
        return super().send(request, **kwargs)


def open_chunk_store(
    location: str, options: StoreOptions, opener: Opener
) -> ListableObjectChunkStore:
    return ListableObjectChunkStore(
        RetryingListableObjects(GCSObjects(location, options), options),
        digest=opener.digest,
        format=options.storage_format(),
        skip_verify=options.skip_verify,
    )


def open_index_store(location: str, options: StoreOptions, opener: Opener) -> ObjectIndexStore:
    return ObjectIndexStore(RetryingListableObjects(GCSObjects(location, options), options))
