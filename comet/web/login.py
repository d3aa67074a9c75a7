"""
C{POST /login}: a user's name and password (HTTP Basic) exchanged for a
short-lived API token, so that a client (C{comet login}) keeps a token that
expires rather than the password.

The password is checked by the same code as every Basic request
(L{comet.web._auth.Authenticator}): the same timing for unknown users, the
same throttle of failed guesses (429) and the same audit entry for a failure.
The token's expiry is the C{expires} column of C{api_tokens}; C{CometAPI}'s
C{login_token_lifetime} (12 hours) bounds it.  The request itself, a POST, is in the audit
log (never the token).  Called with a token instead, it answers a new token
that expires no later than the one presented: a stolen token cannot be
renewed past its own end.
"""

from __future__ import annotations

from comet.errors import Conflict
from comet.web._schemas import NAME, TIME, enum, obj, resource
from comet.web._table import VIEWER, Routes

#: The endpoints this module declares (each app serves them: L{comet.web.routes}).
routes = Routes()

LOGIN = resource(
    "Login",
    user=NAME,
    role=enum("viewer", "operator", "admin"),
    token={"type": "string"},
    created=TIME,
    expires=TIME,
)


@routes.route("POST", "login", obj(lifetime={"type": "integer", "minimum": 60}), role=VIEWER,
              answers={200: LOGIN}, errors=(409,))
async def login(models, request, body):
    """
    Exchange the user name and password of the request's C{Authorization:
    Basic} for a new API token that expires (C{lifetime} seconds, at most
    the daemon's C{login_token_lifetime}; with a Bearer token, at most
    what is left of that token's).
    """
    identity = request.comet_identity
    longest = request.comet_token_lifetime
    lifetime = min(body.get("lifetime", longest), longest)
    scheme, _, value = (request.getHeader(b"authorization") or b"").decode("latin-1").partition(" ")
    if scheme.lower() == "bearer":
        left = await models.users.token_left(value.strip())
        if left is not None:
            lifetime = min(lifetime, left)
            if lifetime <= 0:
                raise Conflict("the token presented expires now; log in with a password")
    record, token = await models.users.create_token(identity.name, lifetime)
    return {
        "user": identity.name,
        "role": identity.role,
        "token": token,
        "created": record.created,
        "expires": record.expires,
    }
