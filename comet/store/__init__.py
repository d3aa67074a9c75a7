"""
Comet's own records, in one SQLite file.

L{Database} is the connection and the migrations; each aggregate has a small
repository (L{Tasks}, L{Clusters}, ...) that holds its SQL, so no SQL text
lives anywhere else.  L{connect} and L{in_transaction} are the blocking
counterparts, for C{comet-admin}, which works on the file without a reactor;
L{migrate} brings a connection's file to the current schema (both use it).
L{copy_database} makes a consistent copy of a live file (backups), and a file
at a schema newer than this Comet knows is refused with L{NewerSchema}.
"""

from comet.store._backup import NewerSchema, copy_database, schema_version
from comet.store._db import Database, connect, in_transaction, migrate
from comet.store._migrations import MIGRATIONS

#: The newest schema version this Comet knows.
MIGRATIONS_KNOWN = max(version for version, _ in MIGRATIONS)
from comet.store.clusters import ClusterRecord, Clusters
from comet.store.hosts import HostMaintenance
from comet.store.intents import IntentRecord, Intents
from comet.store.locks import LockRecord, Locks, OwnerRecord
from comet.store.storage import PoolRecord, SnapshotRecord, Snapshots, Storage, VolumeRecord
from comet.store.tasks import TaskRecord, Tasks
from comet.store.templates import TemplateRecord, Templates
from comet.store.vms import NicRecord, VMRecord, VMs

__all__ = [
    "Database",
    "connect",
    "in_transaction",
    "migrate",
    "copy_database",
    "schema_version",
    "NewerSchema",
    "MIGRATIONS_KNOWN",
    "Tasks",
    "TaskRecord",
    "Clusters",
    "ClusterRecord",
    "Templates",
    "TemplateRecord",
    "VMs",
    "VMRecord",
    "NicRecord",
    "Storage",
    "PoolRecord",
    "VolumeRecord",
    "Snapshots",
    "SnapshotRecord",
    "HostMaintenance",
    "Intents",
    "IntentRecord",
    "Locks",
    "LockRecord",
    "OwnerRecord",
]
