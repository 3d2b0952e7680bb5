"""The `openai_compatible` content provider: one chat completion per row.

`POST {base_url}/chat/completions` with `Authorization: Bearer <key>` (the key read from the
environment variable named by `api_key_env`), the `model`, an optional `system_prompt` and a user
prompt rendered from `prompt_template` (sandboxed Jinja2 over the row's fields). Any server of
that API works: OpenAI and other hosted ones, vLLM, Ollama (`http://localhost:11434/v1`),
LM Studio (`http://localhost:1234/v1`).

The message is `choices[0].message.content`; the answer's `usage` object is kept per row.

Errors no retry will fix stop the step (ProviderUnusable) instead of failing every row in turn:
401/403 (the key), 404 (the URL; a hint when `base_url` lacks `/v1`), OpenAI's
`insufficient_quota`, and a server that could not be reached on any attempt before it had
answered anything.

Limits of the account (base_url + key), shared by every worker: `requestsPerMinute` and
`tokensPerMinute` (worker.providers.throttle). A call takes one request and an estimate of its
tokens (the prompt's characters / 4 + max_tokens, or 256 without it) before it goes out; the
answer's `usage.total_tokens` corrects the estimate. No turn before the job's deadline:
OutOfTurn, the row is left for the next job.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from web.domain.provider_limits import account_key
from worker.providers.calls import CallPolicy, error_text, post_json
from worker.providers.secrets import read_secret, scrub
from worker.providers.template import compile_template, render
from worker.providers.throttle import Throttle, bucket
from worker.providers.types import (
    Generated,
    OutOfTurn,
    ProviderContext,
    ProviderError,
    ProviderLimits,
    ProviderUnusable,
    Unreachable,
)
from worker.providers.urls import http_url

WHO = "the chat-completions server"
DEFAULT_ANSWER_TOKENS = 256  # the answer's share of a token estimate without max_tokens


class OpenAICompatibleProvider:
    remote = True

    def __init__(
        self,
        settings: dict[str, Any],
        http: httpx.AsyncClient,
        limits: ProviderLimits | None = None,
    ) -> None:
        self._http = http
        self._base_url = http_url(settings.get("base_url"), "base_url")
        self._url = self._base_url + "/chat/completions"
        self._key_env = str(settings.get("api_key_env"))
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
        # Whether the server has answered anything in this step: until it has, a row that could
        # not reach it on any attempt stops the step (nothing is listening there).
        self._answered = False
        self._throttle = self._shared_limit(settings, limits)

    def _shared_limit(
        self, settings: dict[str, Any], limits: ProviderLimits | None
    ) -> Throttle | None:
        per_minute = settings.get("requestsPerMinute")
        tokens_per_minute = settings.get("tokensPerMinute")
        if limits is None or (per_minute is None and tokens_per_minute is None):
            return None
        account = account_key("llm", self._base_url, self._api_key)
        return Throttle(
            limits,
            None if per_minute is None else bucket(f"{account}:requests", per_minute / 60),
            None
            if tokens_per_minute is None
            else bucket(f"{account}:tokens", tokens_per_minute / 60),
        )

    @classmethod
    def for_step(
        cls, settings: dict[str, Any], context: ProviderContext
    ) -> OpenAICompatibleProvider:
        return cls(settings, context.http, context.limits)

    def token_estimate(self, body: dict[str, Any]) -> int:
        """What a call may spend: the prompt's characters / 4 plus the answer's max_tokens."""
        characters = sum(len(m["content"]) for m in body["messages"])
        return characters // 4 + int(self._options.get("max_tokens") or DEFAULT_ANSWER_TOKENS)

    def request_body(self, row: dict[str, Any]) -> dict[str, Any]:
        messages = []
        if self._system_prompt:
            messages.append({"role": "system", "content": str(self._system_prompt)})
        messages.append({"role": "user", "content": render(self._prompt, row)})
        return {"model": self._model, "messages": messages, **self._options}

    async def generate(self, row: dict[str, Any]) -> Generated:
        body = self.request_body(row)
        estimate = self.token_estimate(body)
        if self._throttle is not None and not await self._throttle.turn(tokens=estimate):
            raise OutOfTurn
        try:
            response = await post_json(
                self._http,
                self._url,
                body,
                {"Authorization": f"Bearer {self._api_key}"},
                self._policy,
                resend_unsure=True,
                who=WHO,
                retryable=_retryable,
                limit=self._throttle,
            )
        except Unreachable as exc:
            if self._answered:
                raise
            raise ProviderUnusable(str(exc)) from None
        self._answered = True
        if response.status_code >= 400:
            raise self._error_for(response)
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
        if self._throttle is not None:
            used = usage.get("total_tokens") if isinstance(usage, dict) else None
            await self._throttle.correct_tokens(
                estimate, float(used) if isinstance(used, int | float) else None
            )
        return Generated(content.strip(), usage if isinstance(usage, dict) else None)

    def _error_for(self, response: httpx.Response) -> ProviderError:
        status = response.status_code
        text = scrub(_error(response), self._api_key)
        if status in (401, 403):
            return ProviderUnusable(
                f"{WHO} refused the key in {self._key_env} (settings.api_key_env): {status} {text}"
            )
        if status == 404:
            message = f"{WHO} answered 404 to POST {self._url}: {text}"
            segments = httpx.URL(self._base_url).path.split("/")
            if not any(re.fullmatch(r"v\d+\w*", segment) for segment in segments):
                # No version in the path (`http://localhost:11434` for Ollama's `/v1`).
                message += f"; did you mean base_url {self._base_url}/v1?"
            return ProviderUnusable(message)
        if status == 429 and _error_code(response) == "insufficient_quota":
            return ProviderUnusable(f"{WHO} answered 429: {text}")
        return ProviderError(f"the provider answered {status}: {text}")


def _retryable(response: httpx.Response) -> bool:
    """429 and 5xx, except a 429 for a spent quota (OpenAI's `insufficient_quota`)."""
    if response.status_code == 429:
        return _error_code(response) != "insufficient_quota"
    return response.status_code >= 500


def _error_code(response: httpx.Response) -> object:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return None
    return error.get("code") if isinstance(error, dict) else None


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
