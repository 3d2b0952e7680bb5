from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-12-02T16:49:15:000000"
VERSION = "1.38.0"
DESCRIPTION = (
    "The reconciler's partial index of what is due on executions waiting for approval, the "
    "reminder or the deadline (web.domain.approvals.enforce_due), in place of "
    "execution_approval_deadline; reminders due but not sent yet are given their moment"
)


class Execution(Table, tablename="execution", schema=None):
    pass


# Raw SQL runs before a migration's own column changes, so this index on
# execution.approval_remind_at (added by the migration before) is a migration of its own.
# LEAST ignores NULL: the reminder's moment while it is due (it is before the deadline), then
# the deadline. One range scan of it finds both, so the old deadline-only index goes.
CREATE_INDEX = (
    "CREATE INDEX IF NOT EXISTS execution_approval_due "
    "ON execution ((LEAST(approval_remind_at, approval_deadline))) "
    "WHERE status = 'pending_approval' AND approval_deadline IS NOT NULL"
)
DROP_OLD_INDEX = "DROP INDEX IF EXISTS execution_approval_deadline"
# Executions already waiting when this runs: their reminder is due unless one was recorded
# (PostgreSQL reads "48h", "1h30m", "2d" as web.domain.durations does). One past its moment is
# then sent late by the reconciler, as its deferred job would have been.
BACKFILL = """
UPDATE execution AS e
SET approval_remind_at = e.approval_deadline - w.remind_before::interval
FROM (SELECT x.id,
             (SELECT step -> 'settings' ->> 'remindBefore'
              FROM jsonb_array_elements(x.definition -> 'steps') WITH ORDINALITY AS s(step, n)
              WHERE step ->> 'type' = 'approval' ORDER BY n LIMIT 1) AS remind_before
      FROM execution x
      WHERE x.status = 'pending_approval' AND x.approval_deadline > now()
        AND jsonb_typeof(x.definition -> 'steps') = 'array') AS w
WHERE e.id = w.id AND w.remind_before IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM notification n WHERE n.execution = e.id AND n.kind = 'reminder')
"""
DROP_INDEX = "DROP INDEX IF EXISTS execution_approval_due"
CREATE_OLD_INDEX = (
    "CREATE INDEX IF NOT EXISTS execution_approval_deadline ON execution (approval_deadline) "
    "WHERE status = 'pending_approval' AND approval_deadline IS NOT NULL"
)


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="domain", description=DESCRIPTION)

    async def create_index():
        await Execution.raw(BACKFILL)
        await Execution.raw(CREATE_INDEX)
        await Execution.raw(DROP_OLD_INDEX)

    async def drop_index():
        await Execution.raw(CREATE_OLD_INDEX)
        await Execution.raw(DROP_INDEX)

    manager.add_raw(create_index)
    manager.add_raw_backwards(drop_index)

    return manager
