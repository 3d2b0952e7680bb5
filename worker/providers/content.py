"""The content providers by name, and picking one from a `generate_content` step's settings
(the interface is worker.providers.types.ContentProvider)."""

from __future__ import annotations

from typing import Any

from worker.metrics import ObservedContent
from worker.providers.openai_compatible import OpenAICompatibleProvider
from worker.providers.template import TemplateProvider
from worker.providers.types import (
    ContentProvider,
    ContentProviderClass,
    ProviderConfigError,
    ProviderContext,
)

CONTENT_PROVIDERS: dict[str, ContentProviderClass] = {
    "template": TemplateProvider,
    "openai_compatible": OpenAICompatibleProvider,
}


def content_provider(settings: dict[str, Any], context: ProviderContext) -> ContentProvider:
    """The provider a step's settings name (default `template`); ProviderConfigError if the
    settings cannot work (unknown provider, bad template, missing environment variable)."""
    name = settings.get("provider", "template")
    provider = CONTENT_PROVIDERS.get(name) if isinstance(name, str) else None
    if provider is None:
        raise ProviderConfigError(f"Unknown content provider {name!r}")
    return ObservedContent(provider.for_step(settings, context), name)  # counted and timed
