"""OpenAI wire-format building blocks for the simulator.

Token accounting (the same everywhere in the simulator, so tests can predict it):

* a piece of text costs ``ceil(len(text) / 4)`` tokens;
* a chat message costs ``4 + ceil(len(text) / 4)`` where ``text`` is the
  message ``content`` if it is a string, or the concatenation of the
  ``"text"`` fields of its parts if it is a list (other parts count as 0);
* ``prompt_tokens`` of a chat request is the sum over its messages;
* ``prompt_tokens`` of an embeddings request is the sum over its inputs;
* ``completion_tokens`` is the number of content chunks streamed, i.e. the
  number of pieces the reply was split into (see :class:`ReplyPlan`).

Streaming frames are assembled from pre-encoded byte fragments rather than
serialising a dict per chunk: the benchmark measures gateway overhead
against this server, so the simulator must stay far cheaper than the
gateway.
"""

from __future__ import annotations

import base64
import random
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

import orjson

SYSTEM_FINGERPRINT: Final = "cutover-simulator"
SIMULATED_PREFIX: Final = "[simulated]"

_VOCABULARY: Final[tuple[str, ...]] = (
    "lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit",
    "sed", "do", "eiusmod", "tempor", "incididunt", "ut", "labore", "et",
    "dolore", "magna", "aliqua", "enim", "ad", "minim", "veniam", "quis",
)  # fmt: skip
_PIECE_RE: Final = re.compile(r"\S+\s*|\s+")


def text_tokens(text: str) -> int:
    return (len(text) + 3) // 4


def message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str))
    return ""


def estimate_prompt_tokens(messages: Sequence[Any], tools: Any = None) -> int:
    """About four characters a token, plus a few per message; as real APIs bill them, the tool calls an
    assistant message made (names and arguments) and the request's tool definitions count too."""
    total = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        total += 4 + text_tokens(message_text(content))
        calls = message.get("tool_calls") if isinstance(message, dict) else None
        if isinstance(calls, list) and calls:
            total += text_tokens(orjson.dumps(calls).decode())
    if isinstance(tools, list) and tools:
        total += text_tokens(orjson.dumps(tools).decode())
    return total


def split_pieces(text: str) -> list[str]:
    """Split ``text`` into word-ish pieces whose concatenation is ``text`` again."""
    return _PIECE_RE.findall(text)


def generated_pieces(count: int) -> list[str]:
    """Deterministic filler reply of exactly ``count`` pieces, marked as simulated."""
    if count <= 0:
        return []
    words = [SIMULATED_PREFIX]
    words.extend(" " + _VOCABULARY[i % len(_VOCABULARY)] for i in range(count - 1))
    return words


@dataclass(frozen=True, slots=True)
class ReplyPlan:
    """A reply split into stream pieces, with each piece's delta pre-encoded."""

    pieces: tuple[str, ...]
    content: str
    # ``{"index":0,"delta":{"content":"..."},...}`` per piece, ready to splice.
    choice_bytes: tuple[bytes, ...]

    @classmethod
    def from_pieces(cls, pieces: Sequence[str]) -> ReplyPlan:
        encoded = tuple(
            b'{"index":0,"delta":{"content":' + orjson.dumps(piece) + b'},"logprobs":null,"finish_reason":null}'
            for piece in pieces
        )
        return cls(pieces=tuple(pieces), content="".join(pieces), choice_bytes=encoded)

    def content_for(self, count: int) -> str:
        return self.content if count >= len(self.pieces) else "".join(self.pieces[:count])


_ROLE_CHOICE: Final = b'{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}'
_FINISH_CHOICES: Final[Mapping[str, bytes]] = MappingProxyType(
    {
        reason: b'{"index":0,"delta":{},"logprobs":null,"finish_reason":"' + reason.encode() + b'"}'
        for reason in ("stop", "length", "tool_calls")
    }
)
DONE_FRAME: Final = b"data: [DONE]\n\n"


def usage_dict(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def chat_completion_body(
    *,
    completion_id: str,
    created: int,
    model: str,
    content: str,
    finish_reason: str,
    usage: dict[str, Any] | None,
) -> bytes:
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
    }
    if usage is not None:
        body["usage"] = usage
    return orjson.dumps(body)


class ChunkFramer:
    """Builds the SSE frames of one streamed completion.

    The per-request envelope (id, created, model) is encoded once; every
    frame is then a concatenation of constant fragments.
    """

    __slots__ = ("_head", "_tail", "_usage_head")

    def __init__(self, *, completion_id: str, created: int, model: str, include_usage: bool) -> None:
        envelope = (
            b'data: {"id":"'
            + completion_id.encode()
            + b'","object":"chat.completion.chunk","created":'
            + str(created).encode()
            + b',"model":'
            + orjson.dumps(model)
            + b',"system_fingerprint":"'
            + SYSTEM_FINGERPRINT.encode()
            + b'","choices":'
        )
        self._head = envelope + b"["
        self._usage_head = envelope + b'[],"usage":'
        # OpenAI marks every non-final chunk with an explicit null usage
        # whenever usage reporting was requested.
        self._tail = b'],"usage":null}\n\n' if include_usage else b"]}\n\n"

    def role(self) -> bytes:
        return self._head + _ROLE_CHOICE + self._tail

    def content(self, choice: bytes) -> bytes:
        return self._head + choice + self._tail

    def finish(self, reason: str) -> bytes:
        return self._head + _FINISH_CHOICES[reason] + self._tail

    def usage(self, usage: dict[str, Any]) -> bytes:
        return self._usage_head + orjson.dumps(usage) + b"}\n\n"


def error_body(message: str, err_type: str, param: str | None = None, code: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": err_type, "param": param, "code": code}})


def embedding_vector(text: str, dims: int) -> list[float]:
    """Unit-length vector derived only from ``text`` (stable across processes)."""
    # random.Random seeds a str through SHA-512, which is independent of
    # PYTHONHASHSEED, so vectors are reproducible between runs.
    rng = random.Random("cutover-sim:" + text)
    raw = [rng.uniform(-1.0, 1.0) for _ in range(dims)]
    norm = sum(x * x for x in raw) ** 0.5 or 1.0
    return [x / norm for x in raw]


def embeddings_body(
    inputs: Sequence[str], dims: int, encoding_format: str, model: str, usage: Mapping[str, int] | None
) -> bytes:
    """The whole answer, encoded: CPU-bound, so big ones are built on a worker thread (simulator.handlers)."""
    payload: dict[str, Any] = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode_embedding(embedding_vector(text, dims),
                                                                              encoding_format)}
            for i, text in enumerate(inputs)
        ],
        "model": model,
    }
    if usage is not None:
        payload["usage"] = dict(usage)
    return orjson.dumps(payload)


def encode_embedding(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        # OpenAI's base64 form is little-endian float32, which is what the SDK decodes.
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector
