from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-12-02T04:30:32:000000"
VERSION = "1.38.0"
DESCRIPTION = (
    "The reconciler's partial index of executions waiting for approval with a deadline "
    "(web.domain.approvals.expire_overdue)"
)


class Execution(Table, tablename="execution", schema=None):
    pass


# Raw SQL runs before a migration's own column changes, so this index on
# execution.approval_deadline (added by the migration before) is a migration of its own.
CREATE_INDEX = (
    "CREATE INDEX IF NOT EXISTS execution_approval_deadline ON execution (approval_deadline) "
    "WHERE status = 'pending_approval' AND approval_deadline IS NOT NULL"
)
DROP_INDEX = "DROP INDEX IF EXISTS execution_approval_deadline"


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="domain", description=DESCRIPTION)

    async def create_index():
        await Execution.raw(CREATE_INDEX)

    async def drop_index():
        await Execution.raw(DROP_INDEX)

    manager.add_raw(create_index)
    manager.add_raw_backwards(drop_index)

    return manager
