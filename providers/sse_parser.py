"""Incremental Server-Sent Events parser: bytes in as they arrive, `data` payloads out.

Pure and allocation-light, because it runs once per upstream read on every
stream. An event's data lines are joined with "\\n" (the SSE rule); comments
(": keep-alive"), `event:`, `id:` and `retry:` lines carry nothing an OpenAI
client needs and are dropped. CR and CRLF line ends are accepted, including a
CRLF split across two reads.
"""

from __future__ import annotations


class SSEParser:
    def __init__(self) -> None:
        self._buffer = b""
        self._pending_cr = False

    def feed(self, chunk: bytes) -> list[bytes]:
        if self._pending_cr:
            chunk = b"\r" + chunk
            self._pending_cr = False
        if b"\r" in chunk:
            # Hold a trailing CR back: its LF may be the first byte of the next read.
            if chunk.endswith(b"\r"):
                chunk = chunk[:-1]
                self._pending_cr = True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buffer = self._buffer + chunk if self._buffer else chunk
        out: list[bytes] = []
        start = 0
        while True:
            end = buffer.find(b"\n\n", start)
            if end < 0:
                break
            payload = _data_of(buffer[start:end])
            if payload is not None:
                out.append(payload)
            start = end + 2
        self._buffer = buffer[start:]
        return out

    def flush(self) -> list[bytes]:
        """At end of input: an unterminated last event still counts (some servers omit the blank line)."""
        rest, self._buffer = self._buffer, b""
        if self._pending_cr:
            self._pending_cr = False
        payload = _data_of(rest.strip(b"\n"))
        return [payload] if payload is not None else []


def _data_of(block: bytes) -> bytes | None:
    if block.startswith(b"data: ") and b"\n" not in block:
        return block[6:]
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(data) if data else None
