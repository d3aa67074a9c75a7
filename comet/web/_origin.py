"""
Requests a browser sends on behalf of another site: refused.

A browser that holds Basic credentials for Comet (the console is opened in
one) sends them with any request another page makes it send.  Three rules
keep such a page from acting:

  - Every POST, PUT and DELETE must say C{Content-Type: application/json}
    (L{comet.web._serve}; 415 otherwise, an empty body included).  A page
    cannot send that type to another origin without asking first (a CORS
    preflight, which Comet never grants), while a form or a plain C{fetch}
    can send C{text/plain}, form encoding, or nothing.
  - L{OriginPolicy.check} refuses (403) a change request whose
    C{Sec-Fetch-Site} says another origin sent it (C{cross-site}, and
    C{same-site}: another port of the same host is the same I{site}), or
    whose C{Origin} is not the host it was sent to.  A request without
    either header (curl, scripts, old browsers) is not a browser's
    cross-site request and passes.
  - With C{[api] auth = false} there are no credentials to protect, but a
    page can still reach a loopback daemon by DNS rebinding (its own host
    name made to resolve to 127.0.0.1): then every request's C{Host} must be a
    loopback address, C{localhost}, or a name of C{[api] allowed_hosts}.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from twisted.web.iweb import IRequest

from comet.web._errors import HTTPError

#: Methods that change something: the ones a cross-site page must not send.
CHANGES = frozenset({"POST", "PUT", "DELETE", "PATCH"})

#: C{Sec-Fetch-Site} values of a request that the page's own origin made, or
#: that the user made (typed, bookmarked).
_OWN = frozenset({"same-origin", "none"})

#: Host names always accepted when credentials are off.
LOOPBACK_NAMES = frozenset({"localhost", "localhost."})


def _header(request: IRequest, name: bytes) -> str | None:
    value = request.getHeader(name)
    return value.decode("latin-1").strip() if value is not None else None


def _split_host(host: str) -> tuple[str, str]:
    """C{host[:port]} (C{[v6]:port} too) as C{(name, port)}, the name lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        return name, rest.lstrip(":")
    name, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
    return name, port


def is_loopback(name: str) -> bool:
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _origin_is_host(origin: str, host: str | None) -> bool:
    """Whether C{origin} (an C{Origin} header) names C{host} (a C{Host} header)."""
    if host is None or origin == "null":
        return False
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    default = "443" if parts.scheme == "https" else "80"
    o_name, o_port = _split_host(parts.netloc)
    h_name, h_port = _split_host(host)
    # A port left out is the origin scheme's default (a Host without one
    # behind a TLS proxy is the origin's 443).
    return (o_name, o_port or default) == (h_name, h_port or default)


def same_origin(request: IRequest) -> bool:
    """Whether the request's C{Origin} is the host it was sent to (C{False} without one)."""
    origin = _header(request, b"origin")
    return origin is not None and _origin_is_host(origin, _header(request, b"host"))


class OriginPolicy:
    """
    @param check_host: refuse a C{Host} that is not loopback or in
        C{allowed_hosts} (C{[api] auth = false}).
    @param allowed_hosts: host names (without port) accepted besides loopback.
    """

    def __init__(self, check_host: bool = False, allowed_hosts: tuple[str, ...] = ()):
        self.check_host = check_host
        self.allowed_hosts = frozenset(h.lower().strip("[]") for h in allowed_hosts)

    def check(self, request: IRequest) -> None:
        """Raise a 403 for a request another site made a browser send, or to a foreign C{Host}."""
        host = _header(request, b"host")
        if self.check_host and host is not None:
            name, _ = _split_host(host)
            if not (is_loopback(name) or name in self.allowed_hosts):
                raise HTTPError(
                    403,
                    f"Host {host!r} is not this daemon's: with api.auth = false only loopback"
                    " names and api.allowed_hosts are answered (DNS rebinding)",
                )
        if request.method.decode("ascii", "replace") not in CHANGES:
            return
        fetch_site = _header(request, b"sec-fetch-site")
        if fetch_site is not None and fetch_site.lower() not in _OWN:
            raise HTTPError(
                403, f"a change request sent by another site's page is refused"
                f" (Sec-Fetch-Site: {fetch_site})",
            )
        origin = _header(request, b"origin")
        if origin is not None and not _origin_is_host(origin, host):
            raise HTTPError(
                403, f"a change request from origin {origin!r} is refused: it is not"
                f" {host!r}",
            )
