"""Piccolo configuration: the database comes from DATABASE_URL (see web/settings.py)."""

from piccolo.conf.apps import AppRegistry
from piccolo.engine.postgres import PostgresEngine

from web.settings import get_settings

# timeout: give up connecting after 2 s, so a database outage answers 503 quickly (web.api.errors)
# instead of hanging requests; command_timeout bounds any one statement.
DB = PostgresEngine(
    config={"dsn": get_settings().database_url, "timeout": 2, "command_timeout": 30},
    log_queries=False,
)

APP_REGISTRY = AppRegistry(apps=["web.domain.piccolo_app"])
