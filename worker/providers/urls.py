"""Provider URLs from a step's settings, checked for form before any call (and in the engine's
preflight, when a run starts): an `http` or `https` URL with a host."""

from __future__ import annotations

import httpx

from worker.providers.types import ProviderConfigError


def http_url(value: object, setting: str) -> str:
    """`value` without a trailing slash; ProviderConfigError naming `settings.<setting>` when it
    is not an http(s) URL with a host."""
    text = str(value or "").strip()
    if not text:
        raise ProviderConfigError(f"settings.{setting} is required")
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL:
        url = None
    spaced = any(char.isspace() for char in text)
    if url is None or spaced or url.scheme not in ("http", "https") or not url.host:
        raise ProviderConfigError(f"settings.{setting} is not an http(s) URL with a host: {text!r}")
    return text.rstrip("/")
