"""
The schema, as numbered migrations.

A migration is never edited once it has shipped: a change to the schema is a new
entry at the end.  Each runs in one transaction with its row in
``schema_migrations``, so a database is always at a whole version.
"""

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
]
