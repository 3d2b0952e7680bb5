from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table


class Execution(Table, tablename="execution", schema=None):
    pass


ID = "2026-12-02T04:27:40:000000"
VERSION = "1.38.0"
DESCRIPTION = (
    "execution_purge_due: a partial index of ended executions whose personal data is still "
    "there, oldest first (the retention purge's batches: web.domain.retention). Apart from "
    "the column's migration because Piccolo runs raw SQL before the columns it adds."
)

CREATE_INDEX = (
    "CREATE INDEX IF NOT EXISTS execution_purge_due ON execution (completed_at, id) "
    "WHERE personal_data_purged_at IS NULL AND completed_at IS NOT NULL"
)
DROP_INDEX = "DROP INDEX IF EXISTS execution_purge_due"


async def forwards():
    manager = MigrationManager(
        migration_id=ID, app_name="domain", description=DESCRIPTION
    )

    async def create_index():
        await Execution.raw(CREATE_INDEX)

    async def drop_index():
        await Execution.raw(DROP_INDEX)

    manager.add_raw(create_index)
    manager.add_raw_backwards(drop_index)

    return manager
