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

Keys from an AWS shared credentials file are read again once they are older than
a minute (desync's ``RefreshableSharedCredentialsProvider``): a chunk-server,
mount-index or apply that runs for days picks up keys rotated in the file. The
others (environment, the config's own keys) never change while the process runs.
"""

from __future__ import annotations

import base64
import configparser
import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import boto3
import botocore.exceptions as bx
import botocore.session
import urllib3.exceptions
from botocore import UNSIGNED
from botocore.config import Config as BotoConfig
from botocore.credentials import Credentials as BotoCredentials
from botocore.credentials import ReadOnlyCredentials

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
Clock = Callable[[], float]  # seconds, for ages only (time.monotonic)

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
# One loader of botocore's API models for every store: it keeps the models it has
# loaded, which makes a new client (and its session) several times cheaper (7 ms
# instead of 50).
_loader: Any = None
_session_lock = threading.Lock()
_READ_BLOCK = 64 << 10  # an object's body is read in pieces of this size
# How long keys read from a credentials file are used before it is read again
# (desync: one minute, "to ensure the credentials are always valid").
FILE_CREDENTIALS_TTL = 60.0


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


class CredentialsFileError(StoreError):
    """A credentials file that cannot give the keys (unreadable, unparsable, no
    profile or key), named; nothing read from it is in the message."""


@dataclass(frozen=True)
class CredentialsFile:
    """A profile of an AWS shared credentials file (INI), as the AWS tools read it."""

    path: Path
    profile: str
    region: str  # not in the file: the config's aws-region, S3_REGION or the default

    def read(self, *, transient: bool = False) -> S3Credentials:
        """The profile's keys now. A file that cannot be read, does not parse or lacks
        the profile or a key is a ``CredentialsFileError`` naming the file, never a
        value from it; ``transient`` when the file was readable before (it may be
        half-way through being rewritten: a retry reads it again). A profile without
        both keys is refused, as desync refuses it, rather than taken as anonymous."""
        where = f"AWS credentials file {self.path}"
        parser = configparser.ConfigParser(interpolation=None)
        try:
            with open(self.path) as f:
                parser.read_file(f)
        except OSError as e:
            why = f"cannot read {where}: {e.strerror or type(e).__name__}"
            raise CredentialsFileError(why, transient=transient) from None
        except configparser.Error as e:
            raise CredentialsFileError(f"{where}: {_unparsable(e)}", transient=transient) from None
        if not parser.has_section(self.profile):
            why = f"{where}: no profile [{self.profile}]"
            raise CredentialsFileError(why, transient=transient)
        section = parser[self.profile]
        for key in ("aws_access_key_id", "aws_secret_access_key"):
            if not section.get(key):
                why = f"{where}: [{self.profile}] has no {key}"
                raise CredentialsFileError(why, transient=transient)
        return S3Credentials(
            section["aws_access_key_id"],
            section["aws_secret_access_key"],
            section.get("aws_session_token") or None,
            self.region,
            f"{self.path} [{self.profile}]",
            self,
        )


def _unparsable(e: configparser.Error) -> str:
    """Why a credentials file does not parse, by line number: configparser's own text
    quotes the offending line, and that line may hold a secret."""
    if isinstance(e, configparser.MissingSectionHeaderError):
        return f"line {e.lineno} comes before any [profile]"
    if isinstance(e, configparser.ParsingError):
        return "not key = value at line " + ", ".join(str(n) for n, _ in e.errors)
    if isinstance(e, configparser.DuplicateOptionError):
        return f"line {e.lineno}: {e.option} repeated in [{e.section}]"
    if isinstance(e, configparser.DuplicateSectionError):
        return f"line {e.lineno}: [{e.section}] repeated"
    return "not an INI file"


@dataclass(frozen=True)
class S3Credentials:
    access_key: str  # "" = anonymous (unsigned requests)
    secret_key: str = field(repr=False)  # never shown, not even in a debugger's repr
    session_token: str | None = field(repr=False)
    region: str
    source: str  # where they came from, for messages
    file: CredentialsFile | None = None  # read from it, and read again as they age

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
        return _credentials_file(file, profile, region, environ).read()
    return S3Credentials("", "", None, region, "anonymous")


def _credentials_file(
    file: str, profile: str, region: str, environ: Mapping[str, str]
) -> CredentialsFile:
    """Which file and profile, as desync picks them: the ones named, else
    AWS_SHARED_CREDENTIALS_FILE / AWS_PROFILE, else ~/.aws/credentials [default].
    Decided once: a refresh reads the same file, as desync's does."""
    path = Path(
        file or environ.get("AWS_SHARED_CREDENTIALS_FILE") or Path.home() / ".aws" / "credentials"
    ).expanduser()
    return CredentialsFile(path, profile or environ.get("AWS_PROFILE") or "default", region)


class RefreshingCredentials(BotoCredentials):
    """Keys of a credentials file that botocore signs with, read from the file again
    on the first request after they are ``FILE_CREDENTIALS_TTL`` old (desync's
    RefreshableSharedCredentialsProvider: expired once ``clock()`` is past the read
    plus a minute).

    Not botocore's RefreshableCredentials: that logs a failed refresh as a warning
    with a traceback before raising it, and the CLI shows warnings; here the failure
    is only the StoreError the request fails with (and a later request reads the
    file again)."""

    def __init__(
        self, file: CredentialsFile, first: S3Credentials, clock: Clock = time.monotonic
    ) -> None:
        """``first``: the keys just read from ``file``."""
        super().__init__(first.access_key, first.secret_key, first.session_token, "shared-file")
        self._file, self._clock = file, clock
        self._lock = threading.Lock()
        self._expires = clock() + FILE_CREDENTIALS_TTL

    @property
    def expired(self) -> bool:
        return self._clock() > self._expires

    def get_frozen_credentials(self) -> ReadOnlyCredentials:
        """The keys to sign one request with, the file read again first if they expired."""
        with self._lock:
            if self.expired:
                fresh = self._file.read(transient=True)
                self.access_key, self.secret_key = fresh.access_key, fresh.secret_key
                self.token = fresh.session_token
                self._expires = self._clock() + FILE_CREDENTIALS_TTL
            return ReadOnlyCredentials(self.access_key, self.secret_key, self.token, None)


def signing_credentials(
    credentials: S3Credentials, clock: Clock = time.monotonic
) -> BotoCredentials | None:
    """What botocore signs with: nothing (anonymous), the same keys for the life of
    the store, or, for keys from a credentials file, keys that follow the file."""
    if credentials.anonymous:
        return None
    if credentials.file is not None:
        return RefreshingCredentials(credentials.file, credentials, clock)
    return BotoCredentials(
        credentials.access_key, credentials.secret_key, credentials.session_token
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
        clock: Clock = time.monotonic,  # when keys from a credentials file have aged
    ) -> None:
        self.location, self.page_size = mask_credentials(location), page_size
        self.bucket, self.prefix = where.bucket, where.prefix
        self.credentials, self.options = credentials, options
        self._client = _client(where, credentials, options, clock)

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
        except CredentialsFileError as e:  # reading the keys again, to sign the request
            raise StoreError(f"{what} {self.location}: {e}", transient=e.transient) from None
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


def _client(
    where: S3Location, credentials: S3Credentials, options: StoreOptions, clock: Clock
) -> Any:
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
    keys = signing_credentials(credentials, clock)
    try:
        with _session_lock:  # the shared loader is not thread-safe; the clients are
            return _session_signing_with(keys).client(
                "s3", endpoint_url=where.endpoint, config=config, verify=verify
            )
    except bx.BotoCoreError as e:
        raise StoreError(f"cannot open S3 client for {where.endpoint}: {e}") from None


class _Given:
    """A botocore ``credential_provider`` component that yields the keys it was given
    (in place of botocore's search of the environment and ~/.aws)."""

    def __init__(self, keys: BotoCredentials | None) -> None:
        self.keys = keys

    def load_credentials(self) -> BotoCredentials | None:
        return self.keys


def _session_signing_with(keys: BotoCredentials | None) -> boto3.session.Session:
    """A session whose clients sign with ``keys``. A client given keys as arguments
    keeps them as they are, and a session hands all its clients the same keys, so each
    store gets its own session: a light one, sharing the loaded API models.
    Called under ``_session_lock``."""
    global _loader
    core = botocore.session.Session()
    if _loader is None:
        _loader = core.get_component("data_loader")
    core.register_component("data_loader", _loader)
    core.register_component("credential_provider", _Given(keys))
    return boto3.session.Session(botocore_session=core)


def open_objects(
    location: str, options: StoreOptions, config: Config, *, clock: Clock = time.monotonic
) -> RetryingListableObjects:
    """The bucket's objects, retried; ``clock``: when keys from a credentials file age."""
    where = parse_location(location)
    credentials = resolve_credentials(where.endpoint, config)
    objects = S3Objects(location, where, credentials, options, clock=clock)
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
