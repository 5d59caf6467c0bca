"""HTTP(S) chunk and index stores: desync's chunk-server, casync's HTTP stores, any static server.

Chunks are ``GET``/``HEAD``/``PUT`` at ``<base>/xxxx/<id><ext>``, indexes at
``<base>/<name>``. One ``requests.Session`` per store, its connection pool
sized like the store's concurrency (``n``), shared by every thread (nothing
mutates the session after it is built; every per-request setting is passed
per request). Status codes are mapped in one place (``_check``): 404 is
"missing", 5xx, 408, 429 and dropped connections are transient (retried with
desync's backoff: ``retry.RetryingObjects``), anything else is a refusal. TLS
certificates are verified unless ``trust-insecure`` is set (desync had this
backwards once, #343).
HTTP stores cannot list or delete, so they cannot be pruned (desync's matrix).

Bodies are streamed and read only up to the caller's limit (an error body up to
what its message quotes): a server sending gigabytes for a chunk is refused
after a chunk's worth. Every response is closed, so a body left unread closes
its connection rather than going back to the pool for the next request to read.
"""

from __future__ import annotations

import http.client
import ssl
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit, urlunsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.exceptions import InsecureRequestWarning

from desync_decl.stores.base import StoreError
from desync_decl.stores.objects import (
    ObjectChunkStore,
    ObjectIndexStore,
    ObjectMissing,
    read_at_most,
)
from desync_decl.stores.oci_registry import plain_http_to_registry
from desync_decl.stores.options import StoreOptions
from desync_decl.stores.retry import RetryingObjects
from desync_decl.stores.url import mask_credentials

if TYPE_CHECKING:
    from desync_decl.stores.location import Opener

_TRANSIENT_STATUS = {408, 429}  # "try again later", as well as every 5xx
_BODY_IN_MESSAGE = 200  # characters of an error response quoted in the message
_READ_BLOCK = 64 << 10  # a body is read in pieces of this size
_DRAIN_PIECES = 4  # pieces of an answer to a HEAD or PUT read to reuse its connection
# a refused, dropped (before or in the middle of the body) or timed-out connection
_DROPPED = (
    requests.exceptions.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.Timeout,
)


class HttpObjects:
    """``Objects`` over plain HTTP verbs; keys are URL paths below the base."""

    def __init__(self, location: str, options: StoreOptions) -> None:
        self.location = mask_credentials(location)
        self.options = options
        scheme, netloc, path, query, _ = urlsplit(location)
        if scheme not in ("http", "https") or not netloc:
            raise StoreError(f"{self.location}: not an http:// or https:// URL with a host")
        base_path = path if path.endswith("/") else path + "/"  # desync appends the slash
        self._base = urlunsplit((scheme, netloc, base_path, "", ""))
        self._query = f"?{query}" if query else ""
        self._session = _session(options)
        self._verify: bool | str = False if options.trust_insecure else (options.ca_cert or True)
        self._cert = (
            (options.client_cert, options.client_key)
            if options.client_cert and options.client_key  # given together (StoreOptions.checked)
            else None
        )
        timeout = options.timeout
        self._timeout = (timeout, timeout) if timeout is not None else None
        self._base_seen = False  # once something answers at the base, a 404 is the object's

    def __str__(self) -> str:
        return self.location

    def url(self, key: str) -> str:
        return self._base + quote(key) + self._query

    def read(self, key: str, limit: int) -> bytes:
        return self._request("GET", key, limit=limit)

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def size(self, key: str) -> int | None:
        """The object's length by ``HEAD`` (its Content-Length; -1 without one),
        None when it is absent."""

        try:
            length = self._request("HEAD", key)
        except ObjectMissing:
            return None
        return int(length) if length.isdigit() else -1

    def check_base(self) -> None:
        """``objects.BaseChecked``: after a first 404, a ``HEAD`` of the base itself. A
        store's directory answers something else (200 with a listing, 403 without; a
        chunk-server 400, the base not being a chunk); a 404 there means no store is
        at this URL, which is said as such rather than as every chunk missing."""
        if self._base_seen:
            return
        try:
            self._request("HEAD", "")
        except ObjectMissing:
            url = self.url("")
            raise StoreError(
                f"{self.location}: no store there (HEAD {url}: 404 Not Found; check the URL)"
            ) from None
        except StoreError as e:
            if e.transient:
                raise
        self._base_seen = True

    def write(self, key: str, data: bytes | memoryview) -> None:
        # requests would iterate a memoryview byte by byte: hand it bytes
        body = data if isinstance(data, bytes) else bytes(data)
        self._request("PUT", key, body)

    def close(self) -> None:
        self._session.close()

    def _request(
        self, method: str, key: str, body: bytes | None = None, *, limit: int = 0
    ) -> bytes:
        """One request, its status mapped; a GET's body, at most ``limit`` bytes of it;
        a HEAD's Content-Length (its digits, or nothing)."""
        url = self.url(key)
        try:
            with self._session.request(
                method,
                url,
                data=body,
                timeout=self._timeout,
                verify=self._verify,  # per request, or REQUESTS_CA_BUNDLE would override it
                cert=self._cert,
                allow_redirects=True,
                stream=True,
            ) as response:
                _check(method, url, response)
                if method != "GET":
                    _drain(response)
                    length = response.headers.get("Content-Length", "") if method == "HEAD" else ""
                    return length.strip().encode("ascii", "replace")
                return read_at_most(_raw_body(response, _READ_BLOCK), limit, f"GET {url}")
        except requests.exceptions.SSLError as e:  # a certificate problem does not heal itself
            raise StoreError(f"{method} {url}: TLS: {_cause(e)}") from None
        except _DROPPED as e:
            raise StoreError(f"{method} {url}: {_cause(e)}", transient=True) from None
        except requests.exceptions.RequestException as e:
            raise StoreError(f"{method} {url}: {_cause(e)}") from None


def _session(options: StoreOptions) -> requests.Session:
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(1, options.n), max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    # chunks are compressed already, and a transparently gunzipped body would be the wrong bytes
    session.headers["Accept-Encoding"] = "identity"
    if options.http_auth:
        session.headers["Authorization"] = options.http_auth
    if options.http_cookie:
        session.headers["Cookie"] = options.http_cookie
    if options.trust_insecure:  # asked for: do not warn on every request
        warnings.filterwarnings("ignore", category=InsecureRequestWarning)
    return session


def _check(method: str, url: str, response: requests.Response) -> None:
    """Map a response's status: 2xx passes, 404 is missing, the rest is a StoreError."""
    status = response.status_code
    if status == 200 or (method != "GET" and 200 <= status < 300):
        return  # a GET must bring the object: no 204 or 206 for one
    if status == 404:
        wrong = plain_http_to_registry(url, response.headers)  # all would read as missing
        if wrong is not None:
            raise wrong
        raise ObjectMissing(url)
    message = f"{method} {url}: {status} {response.reason or ''}".rstrip()
    body = " ".join(_start_of_body(response).split())[:_BODY_IN_MESSAGE] if method != "HEAD" else ""
    if body:
        message += f": {body}"
    raise StoreError(message, transient=status >= 500 or status in _TRANSIENT_STATUS)


def _drain(response: requests.Response) -> None:
    """Read a short answer (a HEAD's, a PUT's) to its end, so its connection goes back
    to the pool; a long one is left, and its connection closed with the response."""
    for _ in zip(range(_DRAIN_PIECES), _raw_body(response, _READ_BLOCK), strict=False):
        pass


def _start_of_body(response: requests.Response) -> str:
    """As much of an error body as a message quotes (the rest is never read)."""
    start = next(_raw_body(response, _BODY_IN_MESSAGE * 4), b"")
    return start.decode(response.encoding or "utf-8", "replace")


def _raw_body(response: requests.Response, block: int) -> Iterator[bytes]:
    """The body as sent, never content-decoded: we ask for ``identity``, and a server
    that gzips anyway sends invalid data, not a bomb (requests would inflate a 2 MB
    gzip body to the whole 1 GiB index bound). Errors are those ``iter_content`` raises."""
    try:
        while piece := response.raw.read(block, decode_content=False):
            yield piece
    except urllib3.exceptions.ProtocolError as e:
        raise requests.exceptions.ChunkedEncodingError(e) from None
    except urllib3.exceptions.ReadTimeoutError as e:
        raise requests.exceptions.ConnectionError(e) from None


def _cause(error: BaseException) -> str:
    """The innermost reason of a requests/urllib3 error, in a few words."""
    seen: set[int] = set()
    reason: BaseException = error
    while id(reason) not in seen:
        seen.add(id(reason))
        if isinstance(reason, ssl.SSLCertVerificationError):
            return f"certificate verify failed: {reason.verify_message}"
        if isinstance(reason, ssl.SSLError):
            return (reason.reason or str(reason)).lower().replace("_", " ")
        if isinstance(reason, OSError) and reason.strerror:
            return reason.strerror.lower()
        if isinstance(reason, http.client.IncompleteRead):
            got = reason.partial if isinstance(reason.partial, int) else len(reason.partial)
            return f"connection closed {got} bytes into the body ({reason.expected} more expected)"
        inner = getattr(reason, "reason", None)
        if not isinstance(inner, BaseException):
            args = getattr(reason, "args", ())
            inner = args[0] if args and isinstance(args[0], BaseException) else None
        inner = inner or reason.__cause__ or reason.__context__
        if inner is None:
            break
        reason = inner
    text = str(reason)
    if "Read timed out" in text or "timed out" in text:
        return "timed out"
    return text.rsplit(": ", 1)[-1] if len(text) > 120 else text


def open_chunk_store(location: str, options: StoreOptions, opener: Opener) -> ObjectChunkStore:
    """A chunk store at ``http(s)://host[:port]/path``; not listable, so never pruned."""
    return ObjectChunkStore(
        RetryingObjects(HttpObjects(location, options), options),
        digest=opener.digest,
        format=options.storage_format(),
        skip_verify=options.skip_verify,
    )


def open_index_store(location: str, options: StoreOptions, opener: Opener) -> ObjectIndexStore:
    """Indexes by name below ``http(s)://host[:port]/path/``."""
    return ObjectIndexStore(RetryingObjects(HttpObjects(location, options), options))
