"""Provider secrets come only from environment variables named in a step's settings
(`api_key_env`, `access_token_env`, `token_env`): never from the workflow definition or the
database. Read when the step starts; the value is never logged and never stored."""

from __future__ import annotations

import os
from typing import Any

from worker.providers.types import ProviderConfigError


def read_secret(settings: dict[str, Any], setting: str) -> str:
    """The value of the environment variable whose name is `settings[setting]`. A missing or
    empty variable is a ProviderConfigError naming the variable (never a value)."""
    name = settings.get(setting)
    if not isinstance(name, str) or not name:
        raise ProviderConfigError(f"settings.{setting} is required")
    value = os.environ.get(name, "").strip()
    if not value:
        raise ProviderConfigError(
            f"Environment variable {name} (settings.{setting}) is not set on the worker"
        )
    return value


def scrub(text: str, *secrets: str) -> str:
    """`text` (a provider's error message) with any secret replaced, in case a server echoes
    the credentials it was sent."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text
