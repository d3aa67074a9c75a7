"""
The schema, as numbered migrations.

A migration is never edited once it has shipped: a change to the schema is a new
entry at the end.  Each runs in one transaction with its row in
``schema_migrations``, so a database is always at a whole version.
"""


def _bump_on_change(generation: str, tables: tuple[str, ...]) -> list[str]:
    """Triggers that add one to C{generation} for every row written in C{tables}."""
    return [
        f"CREATE TRIGGER {table}_{event.lower()}_{generation}_generation AFTER {event} ON {table}"
        f" BEGIN UPDATE generations SET value = value + 1 WHERE name = '{generation}'; END"
        for table in tables
        for event in ("INSERT", "UPDATE", "DELETE")
    ]


MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            """CREATE TABLE tasks (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                status TEXT NOT NULL CHECK (status IN ('running', 'finished', 'failed')),
                message TEXT NOT NULL DEFAULT '',
                target_uri TEXT NOT NULL,
                progress INTEGER CHECK (progress IS NULL OR progress BETWEEN 0 AND 100),
                created INTEGER NOT NULL,
                updated INTEGER NOT NULL
            )""",
            "CREATE INDEX tasks_status ON tasks (status)",
            """CREATE TABLE clusters (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                name TEXT NOT NULL UNIQUE,
                description TEXT NOT NULL DEFAULT '',
                created INTEGER NOT NULL
            )""",
        ],
    ),
    (
        2,
        [
            """CREATE TABLE templates (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                name TEXT NOT NULL UNIQUE,
                memory INTEGER NOT NULL CHECK (memory >= 64),
                cpus INTEGER NOT NULL CHECK (cpus >= 1),
                disk_pool TEXT,
                disk_volume TEXT,
                created INTEGER NOT NULL,
                CHECK ((disk_pool IS NULL) = (disk_volume IS NULL))
            )""",
            """CREATE TABLE vms (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                cluster_id INTEGER NOT NULL REFERENCES clusters (id),
                name TEXT NOT NULL,
                uuid TEXT NOT NULL UNIQUE,
                template_id INTEGER REFERENCES templates (id),
                memory INTEGER NOT NULL CHECK (memory >= 64),
                cpus INTEGER NOT NULL CHECK (cpus >= 1),
                host TEXT,
                created INTEGER NOT NULL,
                UNIQUE (cluster_id, name)
            )""",
            "CREATE INDEX vms_host ON vms (host)",
        ],
    ),
    (
        3,
        [
            # Pools registered through the API (registered = 1) and the
            # activation state of every pool (a configured pool gets a row,
            # registered = 0, the first time it is deactivated).
            """CREATE TABLE storage_pools (
                name TEXT PRIMARY KEY,
                server TEXT NOT NULL,
                dataset TEXT NOT NULL,
                registered INTEGER NOT NULL CHECK (registered IN (0, 1)),
                made_dataset INTEGER NOT NULL DEFAULT 0 CHECK (made_dataset IN (0, 1)),
                active INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
                created INTEGER NOT NULL
            )""",
            # Volumes Comet created; a VM's disks are the rows with its uuid.
            """CREATE TABLE storage_volumes (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                pool TEXT NOT NULL,
                name TEXT NOT NULL,
                zvol TEXT NOT NULL,
                capacity INTEGER NOT NULL,
                vm_uuid TEXT,
                dev TEXT,
                own INTEGER NOT NULL DEFAULT 0 CHECK (own IN (0, 1)),
                origin TEXT,
                chap_user TEXT NOT NULL,
                chap_secret TEXT NOT NULL,
                secret_uuid TEXT NOT NULL,
                target TEXT,
                exported_to TEXT,
                created INTEGER NOT NULL,
                UNIQUE (pool, name),
                UNIQUE (vm_uuid, dev),
                CHECK ((vm_uuid IS NULL) = (dev IS NULL))
            )""",
            "CREATE INDEX storage_volumes_vm ON storage_volumes (vm_uuid)",
        ],
    ),
    (
        4,
        [
            # A VM's snapshots: one ZFS snapshot of each of its volumes
            # (``volumes``: JSON list of "pool/volume"), taken together.
            """CREATE TABLE vm_snapshots (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                vm_uuid TEXT NOT NULL,
                name TEXT NOT NULL,
                parent TEXT NOT NULL DEFAULT '',
                current INTEGER NOT NULL DEFAULT 0 CHECK (current IN (0, 1)),
                volumes TEXT NOT NULL,
                created INTEGER NOT NULL,
                UNIQUE (vm_uuid, name)
            )""",
        ],
    ),
    (
        5,
        [
            # Who may use the API (comet/web/_auth.py).  ``password`` is an
            # scrypt hash (comet/credentials.py) or NULL for a token-only user.
            """CREATE TABLE users (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                name TEXT NOT NULL UNIQUE,
                role TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
                password TEXT,
                created INTEGER NOT NULL
            )""",
            # API tokens: only the SHA-256 of each is kept; revoking deletes the row.
            """CREATE TABLE api_tokens (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                hash TEXT NOT NULL UNIQUE,
                created INTEGER NOT NULL
            )""",
            # Every POST/PUT/DELETE an authenticated client made, and its answer.
            """CREATE TABLE audit_log (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                time INTEGER NOT NULL,
                user TEXT NOT NULL,
                method TEXT NOT NULL,
                uri TEXT NOT NULL,
                status INTEGER NOT NULL,
                task_id INTEGER
            )""",
            "CREATE INDEX audit_log_time ON audit_log (time)",
            "CREATE INDEX audit_log_user ON audit_log (user, time)",
        ],
    ),
    (
        6,
        [
            # Intent before action: each step of a multi-step change, written
            # (planned) before it runs and marked done after.  An operation
            # that ends leaves no row, so the rows found at start are what a
            # crash interrupted (see comet.model.reconcile).  ``detail`` is a
            # JSON object naming what the step touches (host, zvol, ...).
            """CREATE TABLE intents (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                operation TEXT NOT NULL,
                task_id INTEGER,
                kind TEXT NOT NULL,
                object TEXT NOT NULL,
                step TEXT NOT NULL,
                detail TEXT NOT NULL DEFAULT '{}',
                state TEXT NOT NULL CHECK (state IN ('planned', 'done')),
                created INTEGER NOT NULL,
                updated INTEGER NOT NULL
            )""",
            "CREATE INDEX intents_operation ON intents (operation)",
        ],
    ),
    (
        7,
        [
            # One row per daemon process that took the database's lease
            # (comet.model.locks): a random id per process start, and what it
            # takes to tell whether that process still runs (its pid and
            # start time on its host, the host's boot).  ``renewed`` is
            # bumped periodically; it alone never makes an owner dead.
            """CREATE TABLE owners (
                owner TEXT PRIMARY KEY,
                pid INTEGER NOT NULL,
                hostname TEXT NOT NULL,
                boot TEXT NOT NULL DEFAULT '',
                proc_start INTEGER,
                started INTEGER NOT NULL,
                renewed INTEGER NOT NULL
            )""",
            # One operation at a time per object (a VM uuid or
            # ``<pool>/<volume>``): taking a lock is an INSERT, which the
            # primary key makes fail for a second one.  Rows of an owner that
            # died are released by the reconciler.
            """CREATE TABLE locks (
                object TEXT PRIMARY KEY,
                task_id INTEGER,
                doing TEXT NOT NULL,
                owner TEXT NOT NULL,
                acquired INTEGER NOT NULL
            )""",
            "CREATE INDEX locks_owner ON locks (owner)",
        ],
    ),
    (
        8,
        [
            # Counters that move whenever a group of tables changes, by any
            # writer (triggers), so that a cache of those rows
            # (comet.store._readcache) knows when it is stale without being
            # emptied by every other commit (intents, locks, tasks, audit).
            # 'vms': the VM rows with their clusters' and templates' names;
            # 'users': the users and their API tokens.
            """CREATE TABLE generations (
                name TEXT PRIMARY KEY,
                value INTEGER NOT NULL
            )""",
            "INSERT INTO generations (name, value) VALUES ('vms', 0), ('users', 0)",
            *_bump_on_change("vms", ("vms", "clusters", "templates")),
            *_bump_on_change("users", ("users", "api_tokens")),
        ],
    ),
    (
        9,
        [
            # The tgt target id of a volume's export (with ``target``): an
            # export made again after its server lost its targets (a reboot)
            # takes the same id.
            "ALTER TABLE storage_volumes ADD COLUMN tid INTEGER",
        ],
    ),
    (
        10,
        [
            # When a token stops being accepted (seconds since the epoch);
            # NULL: never (every token made before this version).
            "ALTER TABLE api_tokens ADD COLUMN expires INTEGER",
        ],
    ),
    (
        11,
        [
            # The compute hosts an admin put in maintenance (comet.model.hosts):
            # placement skips them.  A row per host in maintenance, since when.
            """CREATE TABLE host_maintenance (
                host TEXT PRIMARY KEY,
                since INTEGER NOT NULL
            )""",
        ],
    ),
    (
        12,
        [
            # The NICs a template gives the VMs made from it: a JSON list of
            # {"network": NAME} (no MACs: many VMs share a template).
            "ALTER TABLE templates ADD COLUMN nics TEXT NOT NULL DEFAULT '[]'",
            # A VM's NICs, in order; every MAC unique within Comet.
            """CREATE TABLE vm_nics (
                vm_id INTEGER NOT NULL REFERENCES vms (id) ON DELETE CASCADE,
                idx INTEGER NOT NULL CHECK (idx >= 0),
                network TEXT NOT NULL,
                mac TEXT NOT NULL UNIQUE,
                PRIMARY KEY (vm_id, idx)
            )""",
            # The VXLAN network identifier of a cluster's private network,
            # given the first time one of its VMs has a private NIC.
            """CREATE TABLE cluster_networks (
                cluster_id INTEGER PRIMARY KEY REFERENCES clusters (id) ON DELETE CASCADE,
                vni INTEGER NOT NULL UNIQUE
            )""",
            *_bump_on_change("vms", ("vm_nics", "cluster_networks")),
        ],
    ),
    (
        13,
        [
            # What a VM's first-boot seed says (JSON: host name, SSH keys, the
            # size and SHA-256 of its user-data); NULL: the VM has no seed.
            "ALTER TABLE vms ADD COLUMN provision TEXT",
        ],
    ),
    (
        14,
        [
            # The CPU model a VM (made from the template) needs
            # (comet.model.cpus); NULL: none in particular.
            "ALTER TABLE templates ADD COLUMN cpu_model TEXT",
            "ALTER TABLE vms ADD COLUMN cpu_model TEXT",
        ],
    ),
    (
        15,
        [
            # Local-copy mode (comet.model.storage.localcopies): the compute
            # host whose own ZFS holds a copy of the volume that may be newer
            # than the storage server's, set before the first byte is copied
            # there and cleared only once the copy is synced back; NULL: the
            # storage server's copy is the volume.
            "ALTER TABLE storage_volumes ADD COLUMN copy_host TEXT",
            # Where a VM runs its disks (and the VMs made from a template):
            # "iscsi" on the storage server, "local" a copy on its host.
            "ALTER TABLE templates ADD COLUMN disk_mode TEXT NOT NULL DEFAULT 'iscsi'",
            "ALTER TABLE vms ADD COLUMN disk_mode TEXT NOT NULL DEFAULT 'iscsi'",
        ],
    ),
]
