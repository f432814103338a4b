"""What of an upstream's error text survives scrubbing: secrets and addresses go, ordinary words stay."""

from __future__ import annotations

import pytest

from providers.scrub import scrub_text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Incorrect API key provided: sk-proj-****abcd.", "Incorrect API key provided: [redacted]."),
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic [redacted]"),
        ("Bearer eyJhbGciOi", "Bearer [redacted]"),
        ("see https://internal.example.com/v1/x", "see [url]"),
        ("upstream llm-east.internal.example.com:8443 refused", "upstream [host] refused"),
        ("node 10.0.3.7 and 2001:db8::17 and [::1]:9000", "node [host] and [host] and [host]"),
        ("Azure key 0123456789abcdef0123456789abcdef rejected", "Azure key [redacted] rejected"),
    ],
)
def test_secrets_and_addresses_go(text: str, expected: str) -> None:
    assert scrub_text(text) == expected


@pytest.mark.parametrize(
    "text",
    ["Invalid 'messages[0].content': use basic markdown", "Invalid value for tools.function.name",
     "sk-learn style parameters", "setup.sh failed at 12:30:45", "context_length_exceeded",
     "BASIC AUTHENTICATION required"],
)
def test_ordinary_words_stay(text: str) -> None:
    assert scrub_text(text) == text


def test_the_providers_own_secrets_go_whatever_they_look_like() -> None:
    assert scrub_text("host My-Gateway.corp.lan said no", ["my-gateway.corp.lan"]) == "host [redacted] said no"
