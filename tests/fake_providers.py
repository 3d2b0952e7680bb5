"""Real HTTP servers on 127.0.0.1 (random ports) that speak the providers' APIs as their vendors
document them, for the tests of worker/providers:

- FakeChatCompletions: OpenAI's `POST /v1/chat/completions` (what vLLM, Ollama, LM Studio serve).
- FakeWhatsAppCloud: the WhatsApp Business Cloud API's `POST /v21.0/{phone-number-id}/messages`.
- FakeGateway: a customer's own gateway for the generic `http` messaging provider.

Each checks every request's shape (path, bearer token, JSON body keys and types) and records
what was wrong in `problems` (answered with the vendor's 400), so a test asserts
`server.problems == []`. They can be told to answer errors, 429 with Retry-After, slowly, or not
at all: `respond_with(Reply(429, retry_after="1"), 500)` for the next requests in turn,
`answer_when(predicate, Reply(...))` for every request that matches, `delay_seconds` for all;
`Reply(500, accept=True)` takes the message as usual (it counts as sent) and still answers the
error, as a provider that fails after accepting. A request to a path the vendor does not serve
gets the vendor's answer for that (OpenAI's 404, the Graph API's error 2500) without counting
as a problem: that is the workflow's setting under test, not our request's shape.
They also record how many requests were in flight at once (`max_in_flight`).

`enforce_limit(per_second, capacity)` makes a server enforce a rate limit as the vendor does: a
token bucket (capacity `capacity`, default one second of the rate); a request finding it empty
is refused with the vendor's 429 and `Retry-After` (whole seconds until a token is back, at
least 1), and counted: `accepted` and `refused` hold the time.monotonic() of each. With
`ratelimit_headers` the LLM server also sends `x-ratelimit-remaining-requests` and
`x-ratelimit-reset-requests` on its answers, as OpenAI does.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Reply:
    """An answer to force. `body` None means the vendor's usual error body for `status` (or, for
    200, the normal answer). `hang` never answers (until the server stops)."""

    status: int = 200
    body: Any = None
    retry_after: str | None = None
    delay: float = 0.0
    hang: bool = False
    # Process the request as a success would (a message is recorded as sent), then answer this.
    accept: bool = False


class FakeServer:
    base_path = ""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.problems: list[str] = []
        self.delay_seconds = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self._plan: deque[Reply] = deque()
        self._rules: list[tuple[Callable[[Request], bool], Reply]] = []
        self._lock = threading.Lock()
        self._release = threading.Event()
        # The rate limit this server enforces (enforce_limit), and what it counted.
        self._limit: tuple[float, float] | None = None
        self._tokens = 0.0
        self._refilled = 0.0
        self.ratelimit_headers = False
        self.accepted: list[float] = []
        self.refused: list[float] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                server._serve(self)

            def do_GET(self) -> None:
                server._send(self, 405, {"error": "only POST here"})

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The base URL a workflow's settings point at."""
        return self.origin + self.base_path

    def start(self) -> FakeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    def respond_with(self, *replies: Reply | int | str) -> None:
        """The next requests get these answers in turn (a Reply, a status code or "hang");
        after them, the normal answer."""
        with self._lock:
            for reply in replies:
                if reply == "hang":
                    self._plan.append(Reply(hang=True))
                elif isinstance(reply, int):
                    self._plan.append(Reply(reply))
                else:
                    assert isinstance(reply, Reply)
                    self._plan.append(reply)

    def enforce_limit(self, per_second: float, capacity: float | None = None) -> None:
        """Refuse (429, Retry-After) what goes past a token bucket of `per_second`."""
        with self._lock:
            self._limit = (per_second, capacity if capacity is not None else max(per_second, 1.0))
            self._tokens = self._limit[1]
            self._refilled = time.monotonic()

    def refused_after(self, seconds: float) -> int:
        """Refusals more than `seconds` after the first request."""
        if not self.requests:
            return 0
        first = self.requests[0].at
        return sum(1 for at in self.refused if at - first > seconds)

    def accepted_rate(self, skip: float = 0.0) -> float:
        """Accepted requests per second, to the last one from the first (or, with `skip`, from
        the one after that share of them: the steady rate, past a start-up burst or pause)."""
        first = int(len(self.accepted) * skip)
        if len(self.accepted) - first < 2:
            return 0.0
        span = self.accepted[-1] - self.accepted[first]
        return (len(self.accepted) - 1 - first) / span

    def _take_token(self) -> tuple[bool, int]:
        """Under the lock: (accepted, seconds until a token is back)."""
        assert self._limit is not None
        per_second, capacity = self._limit
        now = time.monotonic()
        self._tokens = min(capacity, self._tokens + (now - self._refilled) * per_second)
        self._refilled = now
        if self._tokens >= 1:
            self._tokens -= 1
            self.accepted.append(now)
            return True, 0
        self.refused.append(now)
        return False, max(math.ceil((1 - self._tokens) / per_second), 1)

    def limit_headers(self) -> dict[str, str]:
        """OpenAI's x-ratelimit-* of a success, when asked for (under the lock)."""
        if not self.ratelimit_headers or self._limit is None:
            return {}
        per_second, capacity = self._limit
        reset = (capacity - self._tokens) / per_second
        return {
            "x-ratelimit-limit-requests": str(round(per_second * 60)),
            "x-ratelimit-remaining-requests": str(math.floor(self._tokens)),
            "x-ratelimit-reset-requests": f"{reset:.3f}s",
        }

    def answer_when(self, predicate: Callable[[Request], bool], reply: Reply) -> None:
        """Every request matching `predicate` gets `reply` (after any planned answers)."""
        with self._lock:
            self._rules.append((predicate, reply))

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Request]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} requests, got {len(self.requests)}")
            await asyncio.sleep(0.01)
        return list(self.requests)

    # --- what a vendor's server does: subclasses ---------------------------------------------

    def check(self, request: Request) -> list[str]:
        """What is wrong with the request's shape (empty when it is as documented)."""
        raise NotImplementedError

    def authorized(self, request: Request) -> bool:
        raise NotImplementedError

    def answer(self, request: Request) -> Any:
        """The body of a successful answer."""
        raise NotImplementedError

    def error_body(self, status: int, message: str | None = None) -> Any:
        raise NotImplementedError

    def unknown_path(self, request: Request) -> tuple[int, Any] | None:
        """The vendor's answer to a path it does not serve; None for the API's own path."""
        return None

    # --- plumbing ----------------------------------------------------------------------------

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length", 0))
        raw = handler.rfile.read(length)
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        request = Request(
            handler.path, {k.lower(): v for k, v in handler.headers.items()}, raw, parsed
        )
        with self._lock:
            self.requests.append(request)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            reply = self._plan.popleft() if self._plan else None
            if reply is None:
                reply = next((r for match, r in self._rules if match(request)), None)
            limited: int | None = None
            headers: dict[str, str] = {}
            if reply is None and self._limit is not None:
                accepted, retry_after = self._take_token()
                limited = None if accepted else retry_after
                headers = self.limit_headers()
        try:
            if reply is not None and reply.hang:
                self._release.wait(60)
                handler.close_connection = True
                return
            delay = self.delay_seconds + (reply.delay if reply else 0.0)
            if delay:
                time.sleep(delay)
            wrong_path = self.unknown_path(request)
            problems = [] if wrong_path else self.check(request)
            if wrong_path:
                self._send(handler, *wrong_path)
            elif problems:
                with self._lock:
                    self.problems.extend(problems)
                self._send(handler, 400, self.error_body(400, "; ".join(problems)))
            elif not self.authorized(request):
                self._send(handler, 401, self.error_body(401))
            elif limited is not None:
                self._send(handler, 429, self.error_body(429), {"Retry-After": str(limited)})
            elif reply is not None and (reply.status != 200 or reply.body is not None):
                if reply.accept:
                    self.answer(request)
                body = reply.body if reply.body is not None else self.error_body(reply.status)
                headers = {"Retry-After": reply.retry_after} if reply.retry_after else {}
                self._send(handler, reply.status, body, headers)
            else:
                self._send(handler, 200, self.answer(request), headers)
        finally:
            with self._lock:
                self.in_flight -= 1

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler,
        status: int,
        body: Any,
        headers: dict[str, str] | None = None,
    ) -> None:
        payload = json.dumps(body).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout): nothing to answer to


def _bearer(request: Request, token: str) -> bool:
    return request.headers.get("authorization") == f"Bearer {token}"


def _json_problems(request: Request) -> list[str]:
    problems = []
    if not request.headers.get("content-type", "").startswith("application/json"):
        problems.append(f"Content-Type is {request.headers.get('content-type')!r}")
    if not isinstance(request.json, dict):
        problems.append("the body is not a JSON object")
    return problems


class FakeChatCompletions(FakeServer):
    """OpenAI's chat completions (https://platform.openai.com/docs/api-reference/chat/create)."""

    base_path = "/v1"

    def __init__(self, api_key: str, model: str = "flowgate-test-model") -> None:
        super().__init__()
        self.api_key = api_key
        self.model = model
        self._ids = itertools.count(1)

    @staticmethod
    def reply_for(prompt: str) -> str:
        """The fake model's message for a user prompt (compliant with the BFSI rules)."""
        return f"{prompt} T&C apply. Reply STOP to opt out."

    @staticmethod
    def usage_for(messages: list[dict[str, str]], content: str) -> dict[str, int]:
        prompt_tokens = sum(len(m["content"].split()) for m in messages)
        completion_tokens = len(content.split())
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }

    @staticmethod
    def prompt_of(request: Request) -> str:
        messages = (request.json or {}).get("messages") or [{}]
        return str(messages[-1].get("content", ""))

    def unknown_path(self, request: Request) -> tuple[int, Any] | None:
        if request.path == "/v1/chat/completions":
            return None
        message = f"Invalid URL (POST {request.path})"
        body = {"error": {"message": message, "type": "invalid_request_error", "param": None,
                          "code": None}}  # fmt: skip
        return 404, body

    def check(self, request: Request) -> list[str]:
        problems = _json_problems(request)
        body = request.json if isinstance(request.json, dict) else {}
        unknown = set(body) - {"model", "messages", "temperature", "max_tokens"}
        if unknown:
            problems.append(f"unexpected body keys {sorted(unknown)}")
        if body.get("model") != self.model:
            problems.append(f"model is {body.get('model')!r}")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return [*problems, "messages must be a non-empty list"]
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or set(message) != {"role", "content"}:
                problems.append(f"messages[{index}] must have exactly role and content")
            elif message["role"] not in ("system", "user", "assistant"):
                problems.append(f"messages[{index}].role is {message['role']!r}")
            elif not isinstance(message["content"], str):
                problems.append(f"messages[{index}].content is not a string")
        if isinstance(messages[-1], dict) and messages[-1].get("role") != "user":
            problems.append("the last message is not the user's")
        return problems

    def authorized(self, request: Request) -> bool:
        return _bearer(request, self.api_key)

    def answer(self, request: Request) -> Any:
        messages = request.json["messages"]
        content = self.reply_for(messages[-1]["content"])
        return {
            "id": f"chatcmpl-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": self.usage_for(messages, content),
        }

    def error_body(self, status: int, message: str | None = None) -> Any:
        kinds = {
            400: ("invalid_request_error", None),
            401: ("invalid_request_error", "invalid_api_key"),
            429: ("requests", "rate_limit_exceeded"),
        }
        kind, code = kinds.get(status, ("server_error", None))
        default = {
            401: "Incorrect API key provided.",
            429: "Rate limit reached for requests",
        }.get(status, "The server had an error while processing your request.")
        return {"error": {"message": message or default, "type": kind, "param": None, "code": code}}


class FakeWhatsAppCloud(FakeServer):
    """The Cloud API's message send
    (https://developers.facebook.com/docs/whatsapp/cloud-api/reference/messages)."""

    base_path = "/v21.0"

    def __init__(self, access_token: str, phone_number_id: str = "106540352242922") -> None:
        super().__init__()
        self.access_token = access_token
        self.phone_number_id = phone_number_id
        # (to, request body, message id) of every message accepted.
        self.sent: list[tuple[str, dict[str, Any], str]] = []

    def reject_number(self, to: str, code: int = 131026, title: str = "Message undeliverable",
                      details: str = "Message failed to send because the recipient is not a "
                      "WhatsApp user") -> None:  # fmt: skip
        body = {
            "error": {
                "message": f"(#{code}) {title}",
                "type": "OAuthException",
                "code": code,
                "error_data": {"messaging_product": "whatsapp", "details": details},
                "fbtrace_id": "AbCdEfGhIjKlMnOp",
            }
        }
        self.answer_when(lambda r: (r.json or {}).get("to") == to, Reply(400, body))

    def unknown_path(self, request: Request) -> tuple[int, Any] | None:
        prefix = f"/v21.0/{self.phone_number_id}"
        if request.path == f"{prefix}/messages":
            return None
        rest = request.path.removeprefix(prefix) if request.path.startswith(prefix) else ""
        message = f"Unknown path components: {rest or request.path}"
        body = {"error": {"message": message, "type": "OAuthException", "code": 2500,
                          "fbtrace_id": "AbCdEfGhIjKlMnOp"}}  # fmt: skip
        return 400, body

    def check(self, request: Request) -> list[str]:
        problems = _json_problems(request)
        body = request.json if isinstance(request.json, dict) else {}
        kind = body.get("type")
        common = {"messaging_product", "recipient_type", "to", "type"}
        if kind == "text":
            if set(body) != common | {"text"}:
                problems.append(f"text message keys are {sorted(body)}")
            text = body.get("text")
            if not isinstance(text, dict) or not isinstance(text.get("body"), str):
                problems.append("text.body must be a string")
            elif set(text) - {"body", "preview_url"}:
                problems.append(f"text keys are {sorted(text)}")
        elif kind == "template":
            if set(body) != common | {"template"}:
                problems.append(f"template message keys are {sorted(body)}")
            problems += self._template_problems(body.get("template"))
        else:
            problems.append(f"type is {kind!r}")
        if body.get("messaging_product") != "whatsapp":
            problems.append("messaging_product must be 'whatsapp'")
        if body.get("recipient_type") != "individual":
            problems.append("recipient_type must be 'individual'")
        if not re.fullmatch(r"\d{8,15}", str(body.get("to"))):
            problems.append(f"to must be the phone number's digits, got {body.get('to')!r}")
        return problems

    @staticmethod
    def _template_problems(template: Any) -> list[str]:
        if not isinstance(template, dict):
            return ["template must be an object"]
        problems = []
        if set(template) - {"name", "language", "components"}:
            problems.append(f"template keys are {sorted(template)}")
        if not isinstance(template.get("name"), str):
            problems.append("template.name must be a string")
        language = template.get("language")
        if not isinstance(language, dict) or set(language) != {"code"}:
            problems.append("template.language must be {code}")
        for component in template.get("components", []):
            if component.get("type") != "body":
                problems.append("only body components are expected")
            for parameter in component.get("parameters", []):
                if set(parameter) != {"type", "text"} or parameter["type"] != "text":
                    problems.append(f"bad parameter {parameter!r}")
        return problems

    def authorized(self, request: Request) -> bool:
        return _bearer(request, self.access_token)

    def answer(self, request: Request) -> Any:
        to = request.json["to"]
        message_id = "wamid." + secrets.token_urlsafe(24)
        with self._lock:
            self.sent.append((to, request.json, message_id))
        message: dict[str, str] = {"id": message_id}
        if request.json["type"] == "template":
            message["message_status"] = "accepted"
        return {
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": to}],
            "messages": [message],
        }

    def error_body(self, status: int, message: str | None = None) -> Any:
        code, title, details = {
            400: (100, "Invalid parameter", message or "Invalid parameter"),
            401: (190, "Error validating access token", "The access token has expired"),
            429: (130429, "Rate limit hit", "Cloud API message throughput has been reached."),
            # The error codes page: 503 with code 2 is downtime or overload, not processed.
            503: (
                2,
                "Service temporarily unavailable",
                "Temporary due to downtime or due to being overloaded",
            ),
        }.get(status, (131000, "Something went wrong", "Something went wrong"))
        return {
            "error": {
                "message": f"(#{code}) {title}",
                "type": "OAuthException",
                "code": code,
                "error_data": {"messaging_product": "whatsapp", "details": details},
                "fbtrace_id": "AbCdEfGhIjKlMnOp",
            }
        }


class FakeGateway(FakeServer):
    """A customer's gateway for the `http` provider: answers {"messageId": "gw-<n>"}."""

    base_path = "/send"

    def __init__(self, token: str | None = None) -> None:
        super().__init__()
        self.token = token
        self._ids = itertools.count(1)
        # (customerId, message id) of every message accepted.
        self.sent: list[tuple[str, str]] = []

    def check(self, request: Request) -> list[str]:
        problems = _json_problems(request)
        if request.path != "/send":
            problems.append(f"POST to {request.path}, not /send")
        body = request.json if isinstance(request.json, dict) else {}
        if set(body) != {"executionId", "customerId", "to", "message", "row"}:
            problems.append(f"body keys are {sorted(body)}")
        return problems

    def authorized(self, request: Request) -> bool:
        return self.token is None or _bearer(request, self.token)

    def answer(self, request: Request) -> Any:
        with self._lock:
            message_id = f"gw-{next(self._ids)}"
            self.sent.append((request.json["customerId"], message_id))
        return {"messageId": message_id, "accepted": True}

    def error_body(self, status: int, message: str | None = None) -> Any:
        return {"error": message or f"gateway error {status}"}
