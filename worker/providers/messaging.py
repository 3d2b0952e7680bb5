"""The messaging providers by name, and picking one from a `send_message` step's settings (the
interface is worker.providers.types.Messenger).

`resend_safe` tells the step how to stay idempotent across re-runs. The sandbox records at most
one message per row, so offering it a row again is harmless. An HTTP provider cannot deduplicate
for us, so the step marks each row `sending` before the call and saves the result right after; a
row found still `sending` on a re-run (the worker died between the two) is reported failed and
not sent again: a missing message can be re-sent by people, a duplicate cannot be taken back.
"""

from __future__ import annotations

from typing import Any

from worker.metrics import ObservedMessenger
from worker.providers.http_gateway import HttpGatewayMessenger
from worker.providers.sandbox import SandboxMessenger
from worker.providers.types import Messenger, MessengerClass, ProviderConfigError, ProviderContext
from worker.providers.whatsapp_cloud import WhatsAppCloudMessenger

MESSENGERS: dict[str, MessengerClass] = {
    "sandbox": SandboxMessenger,
    "whatsapp_cloud": WhatsAppCloudMessenger,
    "http": HttpGatewayMessenger,
}


def messenger(settings: dict[str, Any], context: ProviderContext) -> Messenger:
    """The provider a step's settings name (default `sandbox`); ProviderConfigError if the
    settings cannot work (unknown provider, missing environment variable)."""
    name = settings.get("provider", "sandbox")
    provider = MESSENGERS.get(name) if isinstance(name, str) else None
    if provider is None:
        raise ProviderConfigError(f"Unknown messaging provider {name!r}")
    return ObservedMessenger(provider.for_step(settings, context), name)  # counted and timed
