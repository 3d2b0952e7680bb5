"""Content and messaging providers.

Content (`generate_content`): `template` (sandboxed Jinja2, the default) and `openai_compatible`
(any chat-completions server). Messaging (`send_message`): `sandbox` (records in PostgreSQL, the
default), `whatsapp_cloud` (WhatsApp Business Cloud API) and `http` (a customer's own gateway).
`types.py` holds what they all share (errors, interfaces, results); `content.py` and
`messaging.py` hold the registries and pick a provider from a step's settings; `calls.py` is how
every HTTP provider calls out (timeout, retries, Retry-After).
"""
