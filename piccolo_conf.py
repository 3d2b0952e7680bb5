"""Piccolo configuration: the database comes from DATABASE_URL (see web/settings.py)."""

from piccolo.conf.apps import AppRegistry
from piccolo.engine.postgres import PostgresEngine

from web.settings import get_settings

DB = PostgresEngine(config={"dsn": get_settings().database_url}, log_queries=False)

APP_REGISTRY = AppRegistry(apps=["web.domain.piccolo_app"])
