"""
Comet's HTTP API (Klein).

Importing this package imports every resource module, and so fills the route
table L{ROUTES}; L{CometAPI} serves it.
"""

from comet.web import clusters, hosts, storage, tasks, templates, vms  # noqa: F401  (they fill ROUTES)
from comet.web import console  # noqa: F401  (after vms: the VM console)
from comet.web import audit  # noqa: F401  (health check, audit log)
from comet.web import openapi  # noqa: F401  (it describes the others)
from comet.web._app import CometAPI
from comet.web._table import ROUTES, Response

__all__ = ["CometAPI", "ROUTES", "Response"]
