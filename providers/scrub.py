"""What of an upstream's error answer may reach a client: its `message`, `type`, `param` and `code`, scrubbed.

An upstream's 4xx about a request is the client's to read (OpenAI's own "Invalid 'messages[0].role'"), but
upstreams echo more than they should: their own URL, an internal host, a deployment's key or a masked copy
of it. Only the four fields of OpenAI's error object are kept; in each, URLs, hosts (the provider's own, IP
addresses, names under common top-level domains, anything with a port) and key-shaped tokens are replaced.
The raw body goes to the log at debug level only (providers.openai_compat).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import orjson

_FIELDS = ("message", "type", "param", "code")
_MAX_FIELD = 2000

_URL = re.compile(r"\b[a-z][a-z0-9+.\-]*://[^\s\"'<>`]+", re.IGNORECASE)
_BEARER = re.compile(r"\b(bearer)\s+\S+", re.IGNORECASE)
_BASIC = re.compile(r"\b(basic)\s+([A-Za-z0-9+/]{8,}={0,2})", re.IGNORECASE)
# Prefixed keys, masked or whole: sk-..., sk-proj-****abcd, AIza..., key_..., and long opaque tokens
# (32+ characters mixing letters and digits, as Azure's and most vendors' keys are).
_KEY = re.compile(
    # A prefixed key has a digit or a mask in it: "sk-learn" is a library, not a key.
    r"\b(?:(?:sk|pk|rk|ak)[-_](?=[A-Za-z0-9_\-*.]*[0-9*])[A-Za-z0-9_\-*.]{3,}[A-Za-z0-9_\-*]|AIza[0-9A-Za-z_\-]{10,}"
    r"|(?=[A-Za-z0-9_\-]*[0-9])(?=[A-Za-z0-9_\-]*[A-Za-z])[A-Za-z0-9_\-]{32,})",
)
_IP = re.compile(
    r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?\b|\[[0-9a-fA-F:]{2,}\](?::\d{1,5})?"
    # IPv6 without brackets: five or more groups, or a "::" (so "12:30:45" is still a time).
    r"|\b(?:[0-9a-fA-F]{1,4}:){4,7}[0-9a-fA-F]{1,4}\b"
    r"|\b[0-9a-fA-F]{1,4}(?::[0-9a-fA-F]{1,4})*::(?:[0-9a-fA-F]{1,4}(?::[0-9a-fA-F]{1,4})*)?\b"
)
_HOST_PORT = re.compile(r"\b(?:localhost|[a-z0-9\-]+(?:\.[a-z0-9\-]+)+):\d{2,5}\b", re.IGNORECASE)
# Field paths ("messages.0.content", "tools.function.name") must survive, so only names under a common
# top-level domain count as hosts.
_HOST = re.compile(
    r"\b(?:[a-z0-9](?:[a-z0-9\-]*[a-z0-9])?\.)+(?:com|net|org|io|ai|dev|app|cloud|co|internal|local|lan|corp"
    r"|svc|cluster|xyz|info|biz|tech)\b",
    re.IGNORECASE,
)


def scrub_text(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with the provider's own secrets (its key, host, URL), URLs, hosts and key-shaped tokens replaced."""
    for secret in secrets:
        if secret:
            text = re.sub(re.escape(secret), "[redacted]", text, flags=re.IGNORECASE)
    text = _URL.sub("[url]", text)
    text = _BEARER.sub(r"\1 [redacted]", text)
    text = _BASIC.sub(_basic, text)
    text = _KEY.sub("[redacted]", text)
    text = _IP.sub("[host]", text)
    text = _HOST_PORT.sub("[host]", text)
    return _HOST.sub("[host]", text)


def _basic(match: re.Match[str]) -> str:
    """"Basic <credentials>", but not "basic markdown": base64 mixes cases or has digits or +/=."""
    token = match.group(2)
    looks_encoded = bool(re.search(r"[0-9+/=]", token)) or (token != token.lower() and token != token.upper())
    return f"{match.group(1)} [redacted]" if looks_encoded else match.group(0)


def scrubbed_error(body: bytes, secrets: Iterable[str] = ()) -> bytes:
    """The OpenAI error envelope of `body` with only its four fields, scrubbed; b"" when `body` is not one."""
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return b""
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return b""
    secrets = tuple(secrets)
    fields: dict[str, Any] = {}
    for name in _FIELDS:
        value = error.get(name)
        if isinstance(value, str):
            fields[name] = scrub_text(value[:_MAX_FIELD], secrets)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            fields[name] = value
        else:
            fields[name] = None
    return orjson.dumps({"error": fields})
