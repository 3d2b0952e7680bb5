from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Timestamptz

ID = "2026-12-03T07:38:38:966407"
VERSION = "1.38.0"
DESCRIPTION = "Drop execution_created_at: execution_created_id (created_at DESC, id DESC) serves every query it did, and the planner preferred walking it with a filter over a filter's own index (figure 9)"


async def forwards():
    manager = MigrationManager(
        migration_id=ID, app_name="domain", description=DESCRIPTION
    )

    manager.alter_column(
        table_class_name="Execution",
        tablename="execution",
        column_name="created_at",
        db_column_name="created_at",
        params={"index": False},
        old_params={"index": True},
        column_class=Timestamptz,
        old_column_class=Timestamptz,
        schema=None,
    )

    return manager
