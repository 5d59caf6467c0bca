"""S3 chunk and index stores: ``s3+http(s)://host[:port]/bucket[/prefix][?lookup=auto|path|dns]``.

The bucket is the first path element, the prefix the rest (chunk keys
``prefix/xxxx/<id><ext>``, index objects ``prefix/<name>``), as desync lays them
out. One boto3 client per store, thread-safe, with a connection pool of
``options.n``. boto3's own retries are off (one attempt per call) so that
``error-retry`` counts attempts the way desync does (``retry.RetryingObjects``).
A chunk that reads invalid is read again under the same ``error-retry``
(``retry.rereading_invalid``): S3-compatible services have been seen to end a
body early without any transport error (desync #334).

Credentials, in desync's order: ``S3_ACCESS_KEY``/``S3_SECRET_KEY``
(+ ``S3_SESSION_TOKEN``, region ``S3_REGION``); if both are empty,
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (+ ``AWS_SESSION_TOKEN``); else the
config file's ``s3-credentials`` entry for ``http(s)://host[:port]`` (a glob key
such as ``http://127.0.0.1:*`` really matches) with ``access-key``/``secret-key``
or ``aws-credentials-file`` + ``aws-profile`` (+ ``aws-region``); else the
requests go unsigned (anonymous). A refused request names where its
credentials came from, so a wrong key is one clear line.
"""

from __future__ import annotations

import base64
import configparser
import contextlib
import hashlib
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import boto3
import botocore.exceptions as bx
import urllib3.exceptions
from botocore import UNSIGNED
from botocore.config import Config as BotoConfig

from desync_decl.stores.base import StoreError
from desync_decl.stores.config import Config
from desync_decl.stores.objects import (
    ListableObjectChunkStore,
    ListPage,
    ObjectIndexStore,
    ObjectMissing,
    ObjectTooLarge,
    read_at_most,
)
from desync_decl.stores.options import StoreOptions
from desync_decl.stores.retry import RetryingListableObjects, rereading_invalid
from desync_decl.stores.url import mask_credentials

if TYPE_CHECKING:
    from desync_decl.stores.location import Opener

T = TypeVar("T")

DEFAULT_REGION = "us-east-1"  # what minio-go signs with when nothing says otherwise
_LOOKUPS = {"auto": "auto", "path": "path", "dns": "virtual"}
# Hosts where "auto" means virtual-hosted buckets (minio-go's provider detection);
# everything else (minio, moto, ceph...) gets path-style requests.
_VIRTUAL_HOST_SUFFIXES = (".amazonaws.com", ".amazonaws.com.cn", ".googleapis.com", ".aliyuncs.com")
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}
_TRANSIENT_CODES = {
    "RequestTimeout",
    "RequestTimeoutException",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "InternalError",
    "ServiceUnavailable",
    "BadDigest",  # the body did not arrive as sent (Content-MD5): send it again
}
_TRANSIENT_ERRORS = (
    bx.HTTPClientError,
    bx.ConnectionError,
    bx.IncompleteReadError,
    # botocore reads a body it does not stream (an error's XML, a PUT's answer)
    # without wrapping urllib3's errors: a connection cut or stalled there
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.TimeoutError,
)
# One session for every store: it keeps the loaded API models, which makes a new
# client about ten times cheaper (5 ms instead of 50).
_session: boto3.session.Session | None = None
_session_lock = threading.Lock()
_READ_BLOCK = 64 << 10  # an object's body is read in pieces of this size


@dataclass(frozen=True)
class S3Location:
    endpoint: str  # http(s)://host[:port]
    bucket: str
    prefix: str  # "" or "dir/sub/"
    addressing: str  # boto3's addressing_style: "path" or "virtual"


def parse_location(location: str) -> S3Location:
    """Endpoint, bucket, key prefix and addressing style of an ``s3+http(s)://`` URL."""
    url = urlsplit(location)
    scheme = url.scheme.lower().removeprefix("s3+")
    shown = mask_credentials(location)
    if scheme not in ("http", "https") or not url.hostname:
        raise StoreError(f"{shown}: not an s3+http:// or s3+https:// location")
    bucket, _, prefix = url.path.lstrip("/").partition("/")
    if not bucket:
        raise StoreError(f"{shown}: no bucket in the location")
    prefix = prefix.strip("/")
    lookup = parse_qs(url.query).get("lookup", ["auto"])[-1]
    if lookup not in _LOOKUPS:
        raise StoreError(f"{shown}: lookup must be auto, path or dns, not {lookup!r}")
    style = _LOOKUPS[lookup]
    if style == "auto":
        virtual = url.hostname.endswith(_VIRTUAL_HOST_SUFFIXES)
        # a dotted bucket name breaks the TLS certificate of a virtual host
        style = "virtual" if virtual and not (scheme == "https" and "." in bucket) else "path"
    return S3Location(f"{scheme}://{url.netloc}", bucket, prefix + "/" if prefix else "", style)


@dataclass(frozen=True)
class S3Credentials:
    access_key: str  # "" = anonymous (unsigned requests)
    secret_key: str
    session_token: str | None
    region: str
    source: str  # where they came from, for messages

    @property
    def anonymous(self) -> bool:
        return not self.access_key and not self.secret_key


def resolve_credentials(
    endpoint: str, config: Config, environ: Mapping[str, str] = os.environ
) -> S3Credentials:
    """The credentials for ``endpoint`` (``http(s)://host[:port]``), in desync's order."""
    region = environ.get("S3_REGION") or DEFAULT_REGION
    for key, secret, token in (
        ("S3_ACCESS_KEY", "S3_SECRET_KEY", "S3_SESSION_TOKEN"),
        ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"),
    ):
        if environ.get(key) or environ.get(secret):
            access, secret_key = environ.get(key, ""), environ.get(secret, "")
            return S3Credentials(access, secret_key, environ.get(token) or None, region, key)
    entry = config.section("s3-credentials", endpoint)
    if entry is None:
        return S3Credentials("", "", None, region, "anonymous")
    where = f"{config.path or 'config'}: s3-credentials for {endpoint}"
    region = _string(entry, "aws-region", where) or region
    access, secret = _string(entry, "access-key", where), _string(entry, "secret-key", where)
    if access or secret:
        return S3Credentials(access, secret, None, region, where)
    file, profile = (
        _string(entry, "aws-credentials-file", where),
        _string(entry, "aws-profile", where),
    )
    if file or profile:
        return _from_credentials_file(file, profile, region, environ)
    return S3Credentials("", "", None, region, "anonymous")


def _from_credentials_file(
    file: str, profile: str, region: str, environ: Mapping[str, str]
) -> S3Credentials:
    """A profile of an AWS shared credentials file (INI), as the AWS tools read it."""
    path = Path(
        file or environ.get("AWS_SHARED_CREDENTIALS_FILE") or Path.home() / ".aws" / "credentials"
    ).expanduser()
    profile = profile or environ.get("AWS_PROFILE") or "default"
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path) as f:
            parser.read_file(f)
    except (OSError, configparser.Error) as e:
        raise StoreError(f"cannot read AWS credentials file {path}: {e}") from None
    if not parser.has_section(profile):
        raise StoreError(f"AWS credentials file {path}: no profile [{profile}]")
    section = parser[profile]
    return S3Credentials(
        section.get("aws_access_key_id", ""),
        section.get("aws_secret_access_key", ""),
        section.get("aws_session_token") or None,
        region,
        f"{path} [{profile}]",
    )


def _string(entry: dict[str, Any], key: str, where: str) -> str:
    value = entry.get(key, "")
    if not isinstance(value, str):
        raise StoreError(f"{where}: {key} must be a string")
    return value


class S3Objects:
    """Objects in one bucket under one prefix (``ListableObjects`` for the object stores)."""

    def __init__(
        self,
        location: str,
        where: S3Location,
        credentials: S3Credentials,
        options: StoreOptions,
        *,
        page_size: int = 1000,  # keys per ListObjectsV2 request (S3's maximum)
    ) -> None:
        self.location, self.page_size = mask_credentials(location), page_size
        self.bucket, self.prefix = where.bucket, where.prefix
        self.credentials, self.options = credentials, options
        self._client = _client(where, credentials, options)

    def read(self, key: str, limit: int) -> bytes:
        """Streamed and refused past ``limit`` (closing a body not read to its end
        drops its connection instead of handing it back to the pool)."""
        where = f"{self.location}: {key}"

        def get() -> bytes:
            response = self._client.get_object(Bucket=self.bucket, Key=self.prefix + key)
            with contextlib.closing(response["Body"]) as body:
                if response.get("ContentLength", 0) > limit:
                    raise ObjectTooLarge(where, limit)
                return read_at_most(body.iter_chunks(_READ_BLOCK), limit, where)

        return self._call(f"cannot read {key} from", get)

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def size(self, key: str) -> int | None:
        """The object's length (-1 if the answer does not say), None when it is absent.

        A one-byte ranged GET, not a HEAD: a HEAD's 404 has no body, so a missing
        bucket would look like a missing key; the GET's error code tells them apart,
        and its Content-Range (``bytes 0-0/LENGTH``) gives the length."""

        def probe() -> int:
            try:
                response = self._client.get_object(
                    Bucket=self.bucket, Key=self.prefix + key, Range="bytes=0-0"
                )
            except bx.ClientError as e:
                if _code(e) == "InvalidRange":  # an empty object: it is there
                    return 0
                raise
            with contextlib.closing(response["Body"]) as body:
                # the one byte asked for, read out so the connection goes back to the pool;
                # a server ignoring the range has its connection dropped, not read to the end
                body.read(_READ_BLOCK)
            total = str(response.get("ContentRange", "")).rpartition("/")[2]
            return int(total) if total.isdigit() else -1

        try:
            return self._call(f"cannot check {key} in", probe)
        except ObjectMissing:
            return None

    def write(self, key: str, data: bytes | memoryview) -> None:
        """One PUT: S3 shows an object only once it is complete. Its Content-MD5 makes
        the server refuse a body damaged on the way (BadDigest, retried) instead of
        storing it under the chunk's name."""
        kind = "application/zstd" if key.endswith(".cacnk") else "application/octet-stream"
        body = bytes(data)
        md5 = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()
        self._call(
            f"cannot write {key} to",
            lambda: self._client.put_object(
                Bucket=self.bucket,
                Key=self.prefix + key,
                Body=body,
                ContentType=kind,
                ContentMD5=md5,
            ),
        )

    def delete(self, key: str) -> None:
        with contextlib.suppress(ObjectMissing):
            self._call(
                f"cannot delete {key} from",
                lambda: self._client.delete_object(Bucket=self.bucket, Key=self.prefix + key),
            )

    def list_page(self, under: str, cursor: object) -> ListPage:
        """One ListObjectsV2 page (``cursor``: its continuation token), with each
        object's LastModified."""
        args: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": self.prefix + under,
            "MaxKeys": self.page_size,
        }
        if cursor:
            args["ContinuationToken"] = cursor
        page = self._call("cannot list", lambda: self._client.list_objects_v2(**args))
        entries: list[tuple[str, float | None]] = []
        for item in page.get("Contents", ()):
            modified = item.get("LastModified")
            entries.append((item["Key"][len(self.prefix) :], modified and modified.timestamp()))
        token = page.get("NextContinuationToken")
        return entries, token if page.get("IsTruncated") and token else None

    def close(self) -> None:
        self._client.close()

    def _call(self, what: str, call: Callable[[], T]) -> T:
        """``call()`` with its errors mapped (transient ones marked, for retries)."""
        try:
            return call()
        except bx.ClientError as e:
            raise self._client_error(what, e) from None
        except bx.SSLError as e:  # a certificate problem does not go away by retrying
            raise StoreError(f"{what} {self.location}: {e}") from None
        except _TRANSIENT_ERRORS as e:
            raise StoreError(f"{what} {self.location}: {_why(e)}", transient=True) from None
        except bx.BotoCoreError as e:
            raise StoreError(f"{what} {self.location}: {e}") from None

    def _client_error(self, what: str, e: bx.ClientError) -> Exception:
        code = _code(e)
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        message = str(e.response.get("Error", {}).get("Message") or code).rstrip(".")
        if code in _MISSING_CODES:
            return ObjectMissing()
        if code == "NoSuchBucket":
            return StoreError(f"{what} {self.location}: bucket {self.bucket} does not exist")
        if status in (401, 403):
            return StoreError(
                f"{what} {self.location}: access denied: {code}: {message};"
                f" credentials from {self.credentials.source}"
            )
        transient = code in _TRANSIENT_CODES or status == 429 or status >= 500
        return StoreError(f"{what} {self.location}: {code}: {message}", transient=transient)


def _why(e: Exception) -> str:
    """A connection failure in a few words: botocore's own text repeats the object's
    whole URL and hides the cause (refused, unreachable) in its ``error``."""
    if isinstance(e, bx.ConnectTimeoutError):
        return "connect timed out"
    if isinstance(e, bx.ReadTimeoutError):
        return "read timed out"
    if isinstance(e, bx.EndpointConnectionError):
        cause: BaseException | None = e.kwargs.get("error")
        seen = 0
        while (
            cause is not None and seen < 8 and not (isinstance(cause, OSError) and cause.strerror)
        ):
            cause, seen = cause.__cause__ or cause.__context__, seen + 1
        if isinstance(cause, OSError) and cause.strerror:
            return f"cannot connect: {cause.strerror.lower()}"
        return "cannot connect"
    return str(e)


def _code(e: bx.ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def _client(where: S3Location, credentials: S3Credentials, options: StoreOptions) -> Any:
    """A boto3 S3 client: one attempt per call, a pool of ``n``, verified TLS by default."""
    config = BotoConfig(
        region_name=credentials.region,
        signature_version=UNSIGNED if credentials.anonymous else "s3v4",
        s3={"addressing_style": where.addressing},
        retries={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=max(1, options.n),
        connect_timeout=options.timeout,
        read_timeout=options.timeout,
        # Checksums only where S3 requires them: S3-compatible servers that predate
        # boto3's default CRC headers refuse them. Chunks are verified by hash anyway.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        client_cert=(options.client_cert, options.client_key) if options.client_cert else None,
    )
    verify: bool | str | None = None  # None: boto3's default (verify, $AWS_CA_BUNDLE)
    if options.ca_cert:
        verify = options.ca_cert
    elif options.trust_insecure:
        verify = False
    keys: dict[str, Any] = {}
    if not credentials.anonymous:
        keys = {
            "aws_access_key_id": credentials.access_key,
            "aws_secret_access_key": credentials.secret_key,
            "aws_session_token": credentials.session_token,
        }
    try:
        with _session_lock:  # a boto3 session is not thread-safe; its clients are
            return _shared_session().client(
                "s3", endpoint_url=where.endpoint, config=config, verify=verify, **keys
            )
    except bx.BotoCoreError as e:
        raise StoreError(f"cannot open S3 client for {where.endpoint}: {e}") from None


def _shared_session() -> boto3.session.Session:
    global _session
    if _session is None:
        _session = boto3.session.Session()
    return _session


def open_objects(location: str, options: StoreOptions, config: Config) -> RetryingListableObjects:
    where = parse_location(location)
    objects = S3Objects(location, where, resolve_credentials(where.endpoint, config), options)
    return RetryingListableObjects(objects, options)


def open_chunk_store(
    location: str, options: StoreOptions, opener: Opener
) -> ListableObjectChunkStore:
    return ListableObjectChunkStore(
        open_objects(location, options, opener.config),
        digest=opener.digest,
        format=options.storage_format(),
        skip_verify=options.skip_verify,
        reread=rereading_invalid(options),
    )


def open_index_store(location: str, options: StoreOptions, opener: Opener) -> ObjectIndexStore:
    return ObjectIndexStore(open_objects(location, options, opener.config))
