from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Integer
from piccolo.columns.indexes import IndexMethod
from piccolo.constraints import Check

ID = "2026-11-25T20:26:21:395530"
VERSION = "1.38.0"
DESCRIPTION = "api_key_usage.monthly_limit and a check: the quota is counted in the execute statement"


async def forwards():
    manager = MigrationManager(
        migration_id=ID, app_name="domain", description=DESCRIPTION
    )

    manager.add_column(
        table_class_name="ApiKeyUsage",
        tablename="api_key_usage",
        column_name="monthly_limit",
        db_column_name="monthly_limit",
        column_class_name="Integer",
        column_class=Integer,
        params={
            "default": None,
            "null": True,
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

    manager.add_constraint(
        table_class_name="ApiKeyUsage",
        tablename="api_key_usage",
        constraint_name="within_monthly_limit",
        constraint_class=Check,
        params={"condition": "used <= monthly_limit"},
        schema=None,
    )

    return manager
