"""The incremental SSE parser gives the same events however the bytes are split into reads."""

from __future__ import annotations

import pytest

from providers.sse_parser import SSEParser

STREAM = (
    b": keep-alive\r\n\r\n"
    b"event: message\r\nid: 7\r\nretry: 100\r\ndata: {\"a\":1}\r\n\r\n"
    b"data:{\"b\":2}\n\n"
    b"data: line one\r\ndata: line two\r\n\r\n"
    b"data:  two leading spaces\n\n"
    b"data: [DONE]\r\n\r\n"
)
EVENTS = [b'{"a":1}', b'{"b":2}', b"line one\nline two", b" two leading spaces", b"[DONE]"]


def parse(chunks: list[bytes]) -> list[bytes]:
    parser = SSEParser()
    out: list[bytes] = []
    for chunk in chunks:
        out += parser.feed(chunk)
    return out + parser.flush()


def test_whole_stream_in_one_read() -> None:
    assert parse([STREAM]) == EVENTS


def test_byte_by_byte() -> None:
    # Splits every CRLF and every "\n\n" across reads, the cases an incremental parser gets wrong.
    assert parse([STREAM[i : i + 1] for i in range(len(STREAM))]) == EVENTS


@pytest.mark.parametrize("size", [2, 3, 5, 7, 11, 64])
def test_fixed_size_reads(size: int) -> None:
    assert parse([STREAM[i : i + size] for i in range(0, len(STREAM), size)]) == EVENTS


def test_events_are_emitted_as_soon_as_complete() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: one\n") == []
    assert parser.feed(b"\ndata: tw") == [b"one"]
    assert parser.feed(b"o\n\n") == [b"two"]


def test_crlf_split_between_reads_is_one_line_end() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: x\r") == []
    assert parser.feed(b"\n\r") == []
    # Had the split CRLF counted as two line ends, "x" would already have been emitted above.
    assert parser.feed(b"\n") == [b"x"]


def test_bare_cr_line_ends() -> None:
    assert parse([b"data: a\r\rdata: b\r\r"]) == [b"a", b"b"]


def test_comment_only_blocks_yield_nothing() -> None:
    assert parse([b": ping\n\n: ping\n\n"]) == []


def test_unterminated_last_event_counts_at_flush() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: tail") == []
    assert parser.flush() == [b"tail"]
    assert parser.flush() == []


def test_empty_data_value() -> None:
    assert parse([b"data:\n\n"]) == [b""]
