from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Integer
from piccolo.columns.indexes import IndexMethod
from piccolo.table import Table

ID = "2026-12-02T01:16:20:000000"
VERSION = "1.38.0"
DESCRIPTION = (
    "execution.run_attempt (part of a re-queued job's id) and the reconciler's partial index "
    "of unfinished executions"
)


class Execution(Table, tablename="execution", schema=None):
    pass


# The reconciler's one query (web/domain/recovery.py) reads unfinished executions oldest first:
# finished ones, nearly all of the table, are not in this index at all, and no sort is needed.
CREATE_INDEX = (
    "CREATE INDEX IF NOT EXISTS execution_unfinished ON execution (created_at) "
    "WHERE status IN ('pending', 'running')"
)
DROP_INDEX = "DROP INDEX IF EXISTS execution_unfinished"


async def forwards():
    manager = MigrationManager(
        migration_id=ID, app_name="domain", description=DESCRIPTION
    )

    manager.add_column(
        table_class_name="Execution",
        tablename="execution",
        column_name="run_attempt",
        db_column_name="run_attempt",
        column_class_name="Integer",
        column_class=Integer,
        params={
            "default": 0,
            "null": False,
            "primary_key": False,
            "unique": False,
            "index": False,
            "index_method": IndexMethod.btree,
            "choices": None,
            "db_column_name": None,
            "secret": False,
        },
        schema=None,
    )

    async def create_index():
        await Execution.raw(CREATE_INDEX)

    async def drop_index():
        await Execution.raw(DROP_INDEX)

    manager.add_raw(create_index)
    manager.add_raw_backwards(drop_index)

    return manager
