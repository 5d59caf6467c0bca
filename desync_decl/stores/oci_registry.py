"""The HTTP side of an OCI registry: requests, auth, and what failures mean.

Kept apart from ``oci.py`` (which knows the distribution v2 API paths and the
chunk artifact layout) so that the store reads as registry operations while
this module owns the transport: one pooled ``requests`` session with TLS as
configured, the ``WWW-Authenticate`` challenge answered with HTTP basic or a
bearer token fetched from the realm it names (credentials from ``oci_auth``),
and every failure turned into one ``StoreError`` that names the registry's own
words and says whether it is transient, which decides what ``retry`` retries.
"""

from __future__ import annotations

import base64
import re
import threading
import urllib.parse
from collections.abc import Mapping
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter

from desync_decl.stores.base import StoreError
from desync_decl.stores.objects import read_at_most
from desync_decl.stores.oci_auth import Credentials
from desync_decl.stores.options import StoreOptions

_PARAM = re.compile(r'(\w+)="([^"]*)"')
_POOL_PREFIX = re.compile(r"^\w+\(host=[^)]*\): ")  # urllib3's "HTTPConnection(host=..): "
_ACTIONS = {"GET": "pull", "HEAD": "pull", "DELETE": "delete"}  # others push
_TRANSPORT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


class RegistryHttp:
    """Requests to one registry: a pool of ``n`` connections, TLS as configured, and
    the auth challenge answered (basic, or a bearer token per action)."""

    def __init__(self, location: str, base: str, options: StoreOptions, creds: Credentials) -> None:
        self.location, self.base, self.creds = location, base, creds
        self.timeout = options.timeout
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(1, options.n), max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        # Given with each request: a session's own ``verify`` loses to REQUESTS_CA_BUNDLE.
        self.verify: bool | str = False if options.trust_insecure else (options.ca_cert or True)
        if options.trust_insecure:  # asked for: no warning on every request
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        if options.client_cert and options.client_key:  # given together (StoreOptions.checked)
            self.session.cert = (options.client_cert, options.client_key)
        self.session.headers["User-Agent"] = "desync-decl"
        self._auth: dict[str, str] = {}  # pull/push/delete -> Authorization header
        self._lock = threading.Lock()

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """The response (any status); transport failures raise a transient StoreError.
        A 401 is answered once with credentials for the challenge it carries."""
        action = _ACTIONS.get(method, "push")
        headers = dict(kwargs.pop("headers", {}))
        sent = self._auth.get(action)
        if sent:
            headers["Authorization"] = sent
        response = self._send(method, url, headers, kwargs)
        if response.status_code != 401:
            return response
        with self._lock:
            if self._auth.get(action, sent) == sent:  # no other thread renewed it meanwhile
                header = self._authorize(response.headers.get("WWW-Authenticate", ""))
                if header is None:
                    return response
                self._auth[action] = header
            header = self._auth[action]
        response.close()
        headers["Authorization"] = header
        return self._send(method, url, headers, kwargs)

    def _send(self, method: str, url: str, headers: dict, kwargs: dict) -> requests.Response:
        try:
            return self.session.request(
                method, url, headers=headers, timeout=self.timeout, verify=self.verify, **kwargs
            )
        except requests.exceptions.SSLError as e:  # a bad certificate stays bad: no retry
            raise StoreError(f"{self.location}: TLS with {self.base}: {_reason(e)}") from None
        except _TRANSPORT as e:
            what = f"{method} {urllib.parse.urlsplit(url).path}"
            raise StoreError(f"{self.location}: {what}: {_reason(e)}", transient=True) from None
        except requests.RequestException as e:  # TLS setup, invalid URL, ...
            raise StoreError(f"{self.location}: {method} {url}: {_reason(e)}") from None

    def _authorize(self, challenge: str) -> str | None:
        """The Authorization header a ``WWW-Authenticate`` challenge asks for."""
        scheme = challenge.split(" ", 1)[0].lower()
        if scheme == "basic":
            if self.creds is None:
                return None
            raw = f"{self.creds[0]}:{self.creds[1]}".encode()
            return "Basic " + base64.b64encode(raw).decode()
        if scheme != "bearer":
            return None
        params = dict(_PARAM.findall(challenge))
        realm = params.pop("realm", "")
        if not realm:
            raise StoreError(f"{self.location}: bearer challenge without a realm: {challenge}")
        response = self._send(
            "GET",
            realm,
            {},
            {"params": params, "auth": tuple(self.creds) if self.creds else None},
        )
        with response:
            if response.status_code != 200:
                raise self.failure(response, f"token from {realm}")
            try:
                answer = response.json()
                return "Bearer " + (answer.get("access_token") or answer["token"])
            except (ValueError, KeyError, TypeError, AttributeError):
                raise StoreError(f"{self.location}: token service {realm} sent no token") from None

    def read_body(self, response: requests.Response, limit: int, what: str) -> bytes:
        """The response body, at most ``limit`` bytes (more is an error, not a hang)."""
        try:
            return read_at_most(response.iter_content(1 << 16), limit, f"{self.location}: {what}")
        except (*_TRANSPORT, requests.exceptions.ContentDecodingError) as e:
            raise StoreError(f"{self.location}: {what}: {_reason(e)}", transient=True) from None

    def failure(self, response: requests.Response, what: str) -> StoreError:
        """A StoreError for an unexpected answer; 408, 429 and 5xx are transient."""
        status = response.status_code
        detail = _error_detail(response)
        if status == 401:
            detail = "authentication failed" if self.creds else "authentication required"
            detail += " (DESYNC_OCI_USERNAME/DESYNC_OCI_PASSWORD or oci-credentials)"
        elif status == 405 and response.request.method == "DELETE":
            detail = "the registry does not allow deletion (distribution: storage.delete.enabled)"
        transient = status in (408, 429) or status >= 500
        message = f"{self.location}: {what}: HTTP {status} {response.reason}"
        return StoreError(message + (f": {detail}" if detail else ""), transient=transient)

    def close(self) -> None:
        self.session.close()


# Every answer of a distribution registry carries it, a 404 outside /v2/ too.
API_VERSION_HEADER = "Docker-Distribution-Api-Version"


def plain_http_to_registry(url: str, headers: Mapping[str, str]) -> StoreError | None:
    """For a plain ``http(s)://`` store whose server said 404 to ``url``: the error when
    that server is an OCI registry (a registry holds chunks only as artifacts: every
    chunk would read as missing), naming the location to use; else None."""
    if API_VERSION_HEADER not in headers:
        return None
    scheme, netloc = urllib.parse.urlsplit(url)[:2]
    return StoreError(
        f"{url}: the server is an OCI registry ({API_VERSION_HEADER}:"
        f" {headers[API_VERSION_HEADER]}), not an HTTP store: address it as"
        f" oci+{scheme}://{netloc}/<repository>"
    )


def _error_detail(response: requests.Response) -> str:
    """The registry's own words: ``errors[0]`` code and message, else a bit of the body."""
    try:
        errors = response.json().get("errors") or []
        first = errors[0]
        return f"{first.get('code', '')} {first.get('message', '')}".strip()
    except (ValueError, AttributeError, IndexError, TypeError):
        return response.text[:200].strip() if response.request.method != "HEAD" else ""


def _reason(error: BaseException) -> str:
    """The root cause of a requests/urllib3 error in a few words ("Connection refused")."""
    if isinstance(error, requests.Timeout):
        return "timed out"
    seen: list[BaseException] = []
    while error not in seen:
        seen.append(error)
        causes = [getattr(error, "reason", None), *error.args]
        inner = next((c for c in causes if isinstance(c, BaseException)), None)
        if inner is None:
            break
        error = inner
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return _POOL_PREFIX.sub("", str(error))
