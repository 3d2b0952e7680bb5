from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-12-02T04:45:00:000000"
VERSION = "1.38.0"
DESCRIPTION = (
    "Indexes of the dashboard's lists at scale: executions newest first by keyset "
    "(created_at, id), alone, per status and per workflow; failed-compliance rows per execution"
)


class Execution(Table, tablename="execution", schema=None):
    pass


# Each serves one dashboard read (web/domain/executions.py, approvals.py) in index order, so a
# page is LIMIT n rows of one index whatever the table's size. Plain CREATE INDEX inside the
# migration's transaction: it blocks writes to the table while it builds (about a second per
# 100,000 executions; the partial row index reads execution_row once). On a large production
# table create them first by hand with CREATE INDEX CONCURRENTLY (which cannot run inside a
# transaction) under the same names: IF NOT EXISTS then makes this migration a no-op.
INDEXES = {
    "execution_created_id": "ON execution (created_at DESC, id DESC)",
    "execution_status_created": "ON execution (status, created_at DESC, id DESC)",
    "execution_workflow_created": "ON execution (workflow, created_at DESC, id DESC)",
    "execution_row_failed": "ON execution_row (execution) WHERE compliance_status = 'failed'",
}


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="domain", description=DESCRIPTION)

    async def create_indexes():
        for name, definition in INDEXES.items():
            await Execution.raw(f"CREATE INDEX IF NOT EXISTS {name} {definition}")

    async def drop_indexes():
        for name in INDEXES:
            await Execution.raw(f"DROP INDEX IF EXISTS {name}")

    manager.add_raw(create_indexes)
    manager.add_raw_backwards(drop_indexes)

    return manager
