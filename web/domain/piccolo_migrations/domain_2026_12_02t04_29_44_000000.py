from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-12-02T04:29:44:000000"
VERSION = "1.38.0"
DESCRIPTION = (
    "audit_entry and audit_checkpoint append-only by trigger (but for the retention purge), "
    "and audit_head's one row at the genesis hash"
)
GENESIS = "0" * 64


class AuditEntry(Table, tablename="audit_entry", schema=None):
    pass


async def forwards():
    manager = MigrationManager(
        migration_id=ID, app_name="domain", description=DESCRIPTION
    )

    # PostgreSQL itself keeps the trail append-only. The only way to delete is the retention
    # purge (web.domain.audit.purge_expired): its transaction sets flowgate.audit_purge_before
    # (SET LOCAL) to its cutoff, and only entries older than that may go. UPDATE and TRUNCATE
    # are always refused; audit_checkpoint refuses UPDATE, DELETE and TRUNCATE outright.
    async def create_triggers():
        await AuditEntry.raw(
            """
            CREATE OR REPLACE FUNCTION flowgate_audit_append_only() RETURNS trigger
            LANGUAGE plpgsql AS $$
            DECLARE
              purge_before text := current_setting('flowgate.audit_purge_before', true);
            BEGIN
              IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'audit_entry'
                 AND purge_before IS NOT NULL AND purge_before <> '' THEN
                IF OLD.at < purge_before::timestamptz THEN
                  RETURN OLD;
                END IF;
              END IF;
              RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'insufficient_privilege';
            END $$
            """
        )
        for table in ("audit_entry", "audit_checkpoint"):
            await AuditEntry.raw(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION flowgate_audit_append_only()"
            )
            await AuditEntry.raw(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION flowgate_audit_append_only()"
            )
        await AuditEntry.raw(
            "INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, {}) ON CONFLICT (id) DO NOTHING",
            GENESIS,
        )

    async def drop_triggers():
        for table in ("audit_entry", "audit_checkpoint"):
            await AuditEntry.raw(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            await AuditEntry.raw(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        await AuditEntry.raw("DROP FUNCTION IF EXISTS flowgate_audit_append_only()")

    manager.add_raw(create_triggers)
    manager.add_raw_backwards(drop_triggers)

    return manager
