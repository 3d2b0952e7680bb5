"""The interface of content providers, and picking one from a `generate_content` step's settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from worker.providers import ProviderConfigError


@dataclass(frozen=True)
class Generated:
    content: str
    # The provider's token usage for this row (the chat-completions `usage` object), if any.
    usage: dict[str, Any] | None = None


class ContentProvider(Protocol):
    # True when each row is a call over the network: rows are then generated `concurrency` at
    # a time and each is saved as soon as it is done, so a re-run never pays for a row twice.
    remote: bool
    concurrency: int

    async def generate(self, row: dict[str, Any]) -> Generated:
        """The message for one row; ProviderError fails this row only."""
        ...


def content_provider(settings: dict[str, Any], http: httpx.AsyncClient) -> ContentProvider:
    """The provider a step's settings name (default `template`); ProviderConfigError if the
    settings cannot work (unknown provider, bad template, missing environment variable)."""
    from worker.providers.openai_compatible import OpenAICompatibleProvider
    from worker.providers.template import TemplateProvider

    name = settings.get("provider", "template")
    if name == "template":
        return TemplateProvider(settings)
    if name == "openai_compatible":
        return OpenAICompatibleProvider(settings, http)
    raise ProviderConfigError(f"Unknown content provider {name!r}")
