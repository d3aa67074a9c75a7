"""
Whether the API's endpoint would expose it: C{check_exposure} refuses a
plain-HTTP or unauthenticated API beyond loopback unless the configuration
allows it (a C{ValueError} saying why, which L{comet.config} reports as its
C{ConfigError}).  Apart from L{comet.config} because it reads the endpoint string
with Twisted's own parser, the one place that does.
"""

from __future__ import annotations

import inspect
import ipaddress


def _listen_address(description: str) -> tuple[str, str | None]:
    """
    What a server endpoint string listens on, as Twisted itself reads it:
    C{(kind, interface)}, where C{kind} is C{tcp}, C{tcp6}, C{ssl}, C{unix}
    or another (plugin) prefix, and C{interface} the address a TCP kind binds
    (C{""}: every address) or C{None} when it is not a TCP kind.

    A regular expression over the string disagreed with Twisted: a repeated
    C{interface=} (Twisted keeps the last), a positional interface
    (C{tcp:8080:0.0.0.0}) and a wrapping prefix (C{haproxy:tcp:…}) each
    slipped a public plain-HTTP listener past the check.  So the string is
    tokenised by Twisted's own parser and its arguments bound to the
    signature of the very function Twisted hands them to (without calling it:
    C{ssl:} would read its key files).
    """
    from twisted.internet import endpoints

    try:
        args, kw = endpoints._parse(description)
    except Exception:  # a dangling backslash, say
        raise ValueError(f"api.endpoint {description!r} is not a valid endpoint string") from None
    kind = args[0].lower() if args else ""
    if kind == "haproxy" and ":" in description:
        # HAProxyServerParser serves the endpoint its arguments describe.
        return _listen_address(description.split(":", 1)[1])
    signatures = {
        "tcp": (endpoints._parseTCP, (None,)),
        "ssl": (endpoints._parseSSL, (None,)),
        "tcp6": (endpoints._TCP6ServerParser._parseServer, (None, None)),
    }
    if kind not in signatures:
        return kind, None
    parser, leading = signatures[kind]
    try:
        bound = inspect.signature(parser).bind(*leading, *args[1:], **kw)
    except TypeError as e:
        raise ValueError(f"api.endpoint {description!r} is not a valid {kind}: endpoint: {e}") from None
    bound.apply_defaults()
    return kind, str(bound.arguments["interface"])


def _is_loopback(interface: str) -> bool:
    """Whether binding C{interface} listens on loopback only (C{""}: every address)."""
    if interface == "localhost":
        return True
    try:
        return ipaddress.ip_address(interface.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(api) -> None:
    """
    Refuse an API that would carry credentials in the clear (plain ``tcp:``)
    or need none (``auth = false``) on a non-loopback address, unless
    ``allow_insecure`` says so.  An endpoint without ``interface=`` listens on
    every address.  A kind whose address or TLS Comet cannot tell
    (``systemd:``, a plugin) counts as plain and public.
    """
    if api.allow_insecure:
        return
    kind, interface = _listen_address(api.endpoint)
    if kind == "unix" or (interface is not None and _is_loopback(interface)):
        return
    if interface is None:
        raise ValueError(
            f"api.endpoint {api.endpoint!r}: Comet cannot tell where a {kind}: endpoint"
            " listens or whether it uses TLS; use ssl:, unix:, or tcp: on a loopback"
            " interface, or set api.allow_insecure = true"
        )
    where = f"api.endpoint {api.endpoint!r} listens beyond loopback"
    if not api.auth:
        raise ValueError(f"{where} with api.auth = false; set api.allow_insecure = true to allow it")
    if kind in ("tcp", "tcp6"):
        raise ValueError(
            f"{where} without TLS; use an ssl: endpoint, or set api.allow_insecure = true"
        )
