"""API keys: from Kedro credentials (``conf/local/credentials.yml``) or the environment.

A key is held in a :class:`Secret`, whose ``repr``/``str`` never show it, so it cannot end
up in a log line or an output by accident; :meth:`Secret.reveal` is called only where the
key is handed to a client.
"""

from __future__ import annotations

import os
import re
from typing import Any

_credentials: dict[str, Any] = {}


class Secret:
    """A value that does not print."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


def set_credentials(credentials: dict[str, Any] | None) -> None:
    """Called by the project hook with the run's credentials (all environments merged)."""
    _credentials.clear()
    _credentials.update(credentials or {})


def openai_api_key() -> Secret | None:
    """``openai.api_key`` from the credentials, else ``$OPENAI_API_KEY``, else None."""
    entry = _credentials.get("openai") or {}
    key = entry.get("api_key") if isinstance(entry, dict) else None
    key = key or os.environ.get("OPENAI_API_KEY")
    return Secret(str(key)) if key else None


#: Things that look like credentials in text a server sends back: bearer tokens, OpenAI-style
#: keys, ``api_key=…`` / ``"api-key": "…"`` pairs, basic-auth in URLs.
_CREDENTIAL_PATTERNS = (
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}"), r"\1 ***"),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{6,}"), "sk-***"),
    (re.compile(r"(?i)((?:api[_-]?key|token|secret|password)[\"']?\s*[:=]\s*[\"']?)[^\s\"',;}&]+"), r"\1***"),
    (re.compile(r"(?i)(://[^/\s:@]+:)[^@\s/]+@"), r"\1***@"),
)


def redact(text: str, *secrets: str | Secret | None) -> str:
    """``text`` with every given secret and anything that looks like a credential
    (``Authorization: Bearer …``, ``sk-…``, ``api_key=…``) replaced by ``***``: for text
    that came from elsewhere (a server's error body or answer) before it is logged or saved."""
    for secret in secrets:
        value = secret.reveal() if isinstance(secret, Secret) else secret
        if value:
            text = text.replace(value, "***")
    for pattern, replacement in _CREDENTIAL_PATTERNS:
        text = pattern.sub(replacement, text)
    return text
