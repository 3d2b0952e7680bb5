from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table
from piccolo.columns.column_types import Integer
from piccolo.columns.indexes import IndexMethod

class Execution(Table, tablename="execution", schema=None):
    pass


ID = "2026-12-02T02:43:03:349316"
VERSION = "1.38.0"
DESCRIPTION = (
    "execution.status_version and a trigger that raises it and notifies "
    "flowgate_execution_status on every status change (GET /executions/:id/events)"
)


async def forwards():
    manager = MigrationManager(
        migration_id=ID, app_name="domain", description=DESCRIPTION
    )

    manager.add_column(
        table_class_name="Execution",
        tablename="execution",
        column_name="status_version",
        db_column_name="status_version",
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

    # In the transaction of the change itself: the version moves and the notification is sent
    # on commit (never for a change that rolls back). Every transition is an UPDATE of this row.
    async def create_trigger():
        await Execution.raw(
            """
            CREATE OR REPLACE FUNCTION flowgate_execution_status_changed() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
              IF NEW.status IS DISTINCT FROM OLD.status
                 OR NEW.approval_status IS DISTINCT FROM OLD.approval_status THEN
                NEW.status_version := OLD.status_version + 1;
                PERFORM pg_notify('flowgate_execution_status',
                                  NEW.id::text || ' ' || NEW.status_version::text);
              END IF;
              RETURN NEW;
            END $$
            """
        )
        await Execution.raw(
            "CREATE TRIGGER execution_status_changed BEFORE UPDATE ON execution "
            "FOR EACH ROW EXECUTE FUNCTION flowgate_execution_status_changed()"
        )

    async def drop_trigger():
        await Execution.raw("DROP TRIGGER IF EXISTS execution_status_changed ON execution")
        await Execution.raw("DROP FUNCTION IF EXISTS flowgate_execution_status_changed()")

    manager.add_raw(create_trigger)
    manager.add_raw_backwards(drop_trigger)

    return manager
