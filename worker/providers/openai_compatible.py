"""The `openai_compatible` content provider: one chat completion per row.

`POST {base_url}/chat/completions` with `Authorization: Bearer <key>` (the key read from the
environment variable named by `api_key_env`), the `model`, an optional `system_prompt` and a user
prompt rendered from `prompt_template` (sandboxed Jinja2 over the row's fields). Any server of
that API works: OpenAI and other hosted ones, vLLM, Ollama (`http://localhost:11434/v1`),
LM Studio (`http://localhost:1234/v1`).

The message is `choices[0].message.content`; the answer's `usage` object is kept per row.
"""

from __future__ import annotations

from typing import Any

import httpx

from worker.providers.calls import CallPolicy, error_text, post_json
from worker.providers.secrets import read_secret, scrub
from worker.providers.template import compile_template, render
from worker.providers.types import Generated, ProviderContext, ProviderError


class OpenAICompatibleProvider:
    remote = True

    def __init__(self, settings: dict[str, Any], http: httpx.AsyncClient) -> None:
        self._http = http
        self._url = str(settings.get("base_url") or "").rstrip("/") + "/chat/completions"
        self._model = str(settings.get("model") or "")
        self._prompt = compile_template(settings, "prompt_template")
        self._system_prompt = settings.get("system_prompt")
        self._options = {
            name: settings[name]
            for name in ("temperature", "max_tokens")
            if settings.get(name) is not None
        }
        self._api_key = read_secret(settings, "api_key_env")
        self._policy = CallPolicy.from_settings(settings)
        self.concurrency = self._policy.concurrency

    @classmethod
    def for_step(
        cls, settings: dict[str, Any], context: ProviderContext
    ) -> OpenAICompatibleProvider:
        return cls(settings, context.http)

    def request_body(self, row: dict[str, Any]) -> dict[str, Any]:
        messages = []
        if self._system_prompt:
            messages.append({"role": "system", "content": str(self._system_prompt)})
        messages.append({"role": "user", "content": render(self._prompt, row)})
        return {"model": self._model, "messages": messages, **self._options}

    async def generate(self, row: dict[str, Any]) -> Generated:
        response = await post_json(
            self._http,
            self._url,
            self.request_body(row),
            {"Authorization": f"Bearer {self._api_key}"},
            self._policy,
            resend_unsure=True,
            who="the chat-completions server",
        )
        if response.status_code >= 400:
            raise ProviderError(
                scrub(
                    f"the provider answered {response.status_code}: {_error(response)}",
                    self._api_key,
                )
            )
        try:
            answer = response.json()
            content = answer["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise ProviderError(
                f"the provider's answer is not a chat completion: {error_text(response)}"
            ) from None
        if not isinstance(content, str) or not content.strip():
            reason = (answer["choices"][0] or {}).get("finish_reason")
            raise ProviderError(f"the provider returned no content (finish_reason: {reason})")
        usage = answer.get("usage")
        return Generated(content.strip(), usage if isinstance(usage, dict) else None)


def _error(response: httpx.Response) -> str:
    """The API's `{"error": {"message": ...}}`, else the start of the body."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return error_text(response)
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if isinstance(error, str) and error:
        return error  # some servers (Ollama, vLLM) answer {"error": "..."}
    return error_text(response)
