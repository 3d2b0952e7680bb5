"""Structured logs: one JSON object per line on stderr, for web, worker and CLI alike.

The formatter masks anything shaped like an API key (64 hex characters), an email address or
a phone number (8 to 15 digits, with or without `+`, standing alone) as defence in depth: code
never logs secrets or personal data on purpose (tests/test_security.py,
tests/test_personal_data_logs.py), and this keeps an accidental f-string from leaking one.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

_SECRET = re.compile(r"\b[0-9a-fA-F]{64}\b")
_EMAIL = re.compile(r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)+")
# Not inside a word, a number or an id (a UUID's groups are bounded by "-").
_PHONE = re.compile(r"(?<![\w.+-])\+?\d{8,15}(?![\w.-])")


def redact(text: str) -> str:
    text = _SECRET.sub(lambda m: m.group(0)[:8] + "…[redacted]", text)
    text = _EMAIL.sub("[email]", text)
    return _PHONE.sub("[phone]", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str = "INFO") -> None:
    """Install the JSON handler on the root logger once per process; later calls (the app
    factory, the worker, the CLI may all call it) change nothing, and handlers others added
    (pytest's log capture, say) are left in place."""
    root = logging.getLogger()
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)
