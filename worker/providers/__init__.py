"""Content and messaging providers.

Content (`generate_content`): `template` (sandboxed Jinja2, the default) and `openai_compatible`
(any chat-completions server). Messaging (`send_message`): `sandbox` (records in PostgreSQL, the
default), `whatsapp_cloud` (WhatsApp Business Cloud API) and `http` (a customer's own gateway).
`content.py` and `messaging.py` hold the interfaces and pick a provider from a step's settings;
`calls.py` is how every HTTP provider calls out (timeout, retries, Retry-After).
"""

from __future__ import annotations


class ProviderConfigError(ValueError):
    """A provider cannot run with these settings (or a missing environment variable): the step,
    and so the execution, fails with this message before any row is touched."""


class ProviderError(Exception):
    """One row failed at the provider (an error answer, a timeout): that row fails, the others
    go on. The message is the provider's own, never a secret."""
