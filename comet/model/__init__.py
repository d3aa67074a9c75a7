"""
What Comet means: clusters, VMs, templates, hosts, storage and tasks.

The model is async functions over the store and the adapters; it raises the
domain errors of L{comet.errors} and knows nothing of HTTP.  L{Models} is the
bag of model objects the web layer is handed.
"""

from __future__ import annotations

import attrs

from comet.model.clusters import ClusterModel
from comet.model.tasks import TaskRunner


@attrs.define
class Models:
    clusters: ClusterModel
    tasks: TaskRunner
