"""
Comet's HTTP API (Klein).

L{CometAPI} serves the API, behind the L{Guard} (authentication by an
L{Authenticator} with its L{LoginThrottle} and L{PasswordChecks}, the
L{OriginPolicy}), on the site L{api_site} makes.  Each one has its own route
table (L{api_routes}), made from the endpoints the resource modules declare on
the paths of L{comet.web.paths}.
"""

from comet.web._app import CometAPI
from comet.web._auth import Authenticator, Guard
from comet.web._origin import OriginPolicy
from comet.web._site import api_site
from comet.web._table import Response
from comet.web._throttle import LoginThrottle, PasswordChecks
from comet.web.routes import api_routes

__all__ = [
    "Authenticator",
    "CometAPI",
    "Guard",
    "LoginThrottle",
    "OriginPolicy",
    "PasswordChecks",
    "Response",
    "api_routes",
    "api_site",
]
