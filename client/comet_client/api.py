"""
The daemon's HTTP API as the client uses it (httpx): JSON in and out, the
credentials of the login, and every failure as one of two exceptions:
L{ApiError} (the daemon answered with an error: its C{reason}) and
L{Unreachable} (no answer at all).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urljoin

import json

import httpx
from httpx_sse import SSEError, connect_sse

from comet_client import __version__
from comet_client.settings import Login

JSON = "application/json"
#: Seconds to wait for a connection and for each answer.
TIMEOUT = httpx.Timeout(60.0, connect=10.0)


class ApiError(Exception):
    """The daemon refused or failed a request; C{reason} is its own words."""

    def __init__(self, code: int, error: str, reason: str, body=None):
        super().__init__(f"{code} {error}: {reason}")
        self.code = code
        self.error = error
        self.reason = reason
        self.body = body


#: What L{Client.events} yields first when asked to announce the stream's start.
OPENED = {"type": "(opened)"}


class Unreachable(Exception):
    """The daemon could not be reached (refused, unresolvable, timed out)."""


@dataclass(frozen=True)
class Answer:
    code: int
    body: object
    location: str | None


def path(*parts: str) -> str:
    """A URI path from unescaped parts: C{path("cluster", "lab")} -> C{/cluster/lab}."""
    return "/" + "/".join(quote(p, safe="") for p in parts)


class Client:
    """One daemon, one set of credentials."""

    def __init__(self, login: Login, transport: httpx.BaseTransport | None = None):
        if not login.url:
            raise ValueError("no URL")
        self.base = login.url.rstrip("/")
        headers = {"Accept": JSON, "User-Agent": f"comet-client/{__version__}"}
        auth = None
        if login.token:
            headers["Authorization"] = f"Bearer {login.token}"
        elif login.user is not None:
            auth = httpx.BasicAuth(login.user, login.password or "")
        self.http = httpx.Client(base_url=self.base, headers=headers, auth=auth,
                                 timeout=TIMEOUT, transport=transport, follow_redirects=False)

    def url(self, uri: str) -> str:
        """The absolute URL of a URI the API gave (an C{href}, a C{Location})."""
        return urljoin(self.base + "/", uri)

    def request(self, method: str, uri: str, body=None, params=None, accept: str = JSON) -> httpx.Response:
        kwargs = {}
        if body is not None:
            kwargs["json"] = body
        try:
            response = self.http.request(method, uri, params=params, headers={"Accept": accept}, **kwargs)
        except httpx.TransportError as e:
            raise Unreachable(f"cannot reach the Comet daemon at {self.base}: {e or type(e).__name__}") from None
        if response.status_code >= 400:
            raise _error(response)
        return response

    def call(self, method: str, uri: str, body=None, params=None) -> Answer:
        """A JSON request; the answer's code, JSON body (or C{None}) and C{Location}."""
        if body is None and method in ("POST", "PUT"):
            body = {}
        response = self.request(method, uri, body, params)
        data = response.json() if response.content and _is_json(response) else None
        return Answer(response.status_code, data, response.headers.get("location"))

    def get(self, uri: str, **params):
        return self.call("GET", uri, params={k: v for k, v in params.items() if v is not None}).body

    def redirect(self, uri: str, **params) -> str:
        """The C{Location} a GET answers with (the console's 303)."""
        response = self.request("GET", uri, params=params)
        location = response.headers.get("location")
        if location is None:
            raise ApiError(response.status_code, "unexpected", f"{uri} answered without a Location")
        return location

    def events(self, types=(), resources=(), last_id: str | None = None,
               announce: bool = False):
        """
        Each event of C{GET /events} (its JSON C{data}, with C{type} and
        C{id}) as it comes, until the stream ends.
        With C{announce}, the first item is L{OPENED}, as soon as the daemon
        has answered: what is read after it is not older than the stream.
        Raises L{ApiError} when the daemon refuses the stream (an unknown
        filter, an older daemon's 404), L{Unreachable} when it cannot be
        reached or the stream breaks.
        """
        params = [("type", t) for t in types] + [("resource", r) for r in resources]
        headers = {"Last-Event-ID": last_id} if last_id else {}
        # No read timeout: the daemon sends a keep-alive comment every few seconds.
        timeout = httpx.Timeout(None, connect=TIMEOUT.connect)
        try:
            with connect_sse(self.http, "GET", "/events", params=params, headers=headers,
                             timeout=timeout) as source:
                response = source.response
                if response.status_code >= 400:
                    response.read()
                    raise _error(response)
                if announce:
                    yield OPENED
                for sse in source.iter_sse():
                    try:
                        data = json.loads(sse.data)
                    except ValueError:
                        continue
                    if isinstance(data, dict):
                        data.setdefault("type", sse.event)
                        yield data
        except httpx.TransportError as e:
            raise Unreachable(f"the event stream of {self.base} broke: {e or type(e).__name__}") from None
        except SSEError as e:
            raise ApiError(0, "not_a_stream", str(e)) from None

    def close(self):
        self.http.close()


def _is_json(response: httpx.Response) -> bool:
    return response.headers.get("content-type", "").split(";")[0].strip() == JSON


def _error(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
        return ApiError(body.get("code", response.status_code), body.get("error", ""),
                        body["reason"], body)
    except (ValueError, KeyError, TypeError, AttributeError):
        text = response.text.strip()[:200] or response.reason_phrase
        return ApiError(response.status_code, response.reason_phrase, text)
