"""
Comet's HTTP API (Klein).

Importing this package imports every resource module, and so fills the route
table L{ROUTES}; L{CometAPI} serves it, behind the L{Guard} (authentication by
an L{Authenticator} with its L{LoginThrottle} and L{PasswordChecks}, the
L{OriginPolicy}), on the site L{api_site} makes.
"""

from comet.web import clusters, hosts, storage, tasks, templates, vms  # noqa: F401  (they fill ROUTES)
from comet.web import console  # noqa: F401  (after vms: the VM console)
from comet.web import audit  # noqa: F401  (health check, audit log)
from comet.web import openapi  # noqa: F401  (it describes the others)
from comet.web._app import CometAPI
from comet.web._auth import Authenticator, Guard
from comet.web._origin import OriginPolicy
from comet.web._site import api_site
from comet.web._table import ROUTES, Response
from comet.web._throttle import LoginThrottle, PasswordChecks

__all__ = [
    "Authenticator",
    "CometAPI",
    "Guard",
    "LoginThrottle",
    "OriginPolicy",
    "PasswordChecks",
    "ROUTES",
    "Response",
    "api_site",
]
