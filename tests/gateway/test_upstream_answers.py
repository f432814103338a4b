"""Every upstream answer is checked before it is passed on: a 200 that is not an answer, or a stream event
that is not JSON, is the upstream's failure (retried, failed over, counted), never a success the SDK trips on."""

from __future__ import annotations

import http.server
import json
import threading

import httpx
import openai
import pytest

from tests.gateway.conftest import GatewayFactory, SimFactory
from tests.gateway.helpers import (
    HELLO,
    UPSTREAM_KEY,
    assert_error,
    assert_no_leak,
    auth,
    data_payloads,
    host_port,
    metric,
    recorded_outcomes,
    route,
    routing,
    scrape,
    sdk,
    sse_lines,
    upstream,
)
from tests.support import wait_for


def test_a_200_without_choices_fails_over_and_counts(make_sim: SimFactory, make_gateway: GatewayFactory) -> None:
    bad, good = make_sim(script=["malformed"]), make_sim()
    gw = make_gateway(
        {"bad": upstream(bad), "good": upstream(good)}, {"chat": route(("bad", "m"), ("good", "m"))},
        routing=routing(attempts=1, failure_threshold=1),
    )
    with sdk(gw) as client:
        reply = client.chat.completions.create(model="chat", messages=HELLO)
        assert reply.choices[0].message.content
        # The shapeless answer counted against its target: with a threshold of 1 it is now cooling down.
        client.chat.completions.create(model="chat", messages=HELLO)
    assert recorded_outcomes(bad) == ["malformed"]
    assert recorded_outcomes(good) == ["ok", "ok"]
    text = scrape(gw.root_url)
    assert metric(text, "cutover_upstream_errors_total", provider="bad", reason="protocol") == 1
    assert metric(text, "cutover_cooldowns_total", provider="bad") == 1


def test_a_200_without_choices_is_retried_then_502(make_sim: SimFactory, make_gateway: GatewayFactory) -> None:
    sim = make_sim(script=["malformed", "ok", "malformed", "malformed"])
    gw = make_gateway({"sim": upstream(sim)}, {"chat": route(("sim", "m"))}, routing=routing(attempts=2))
    with sdk(gw, max_retries=0) as client:
        assert client.chat.completions.create(model="chat", messages=HELLO).choices
        with pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(model="chat", messages=HELLO)
    assert_error(caught.value.response, status=502, type_="upstream_error", code="bad_gateway", param=None)
    assert recorded_outcomes(sim) == ["malformed", "ok", "malformed", "malformed"]


def test_embeddings_without_data_are_502(make_sim: SimFactory, make_gateway: GatewayFactory) -> None:
    sim = make_sim(script=["malformed"])
    gw = make_gateway({"sim": upstream(sim)}, {"embed": route(("sim", "e"))}, routing=routing(attempts=1))
    with sdk(gw, max_retries=0) as client, pytest.raises(openai.InternalServerError) as caught:
        client.embeddings.create(model="embed", input="hello")
    assert_error(caught.value.response, status=502, type_="upstream_error", code="bad_gateway", param=None)


def test_an_undecodable_event_mid_stream_breaks_it(make_sim: SimFactory, make_gateway: GatewayFactory) -> None:
    # Paced chunks: the bad line arrives after the first chunks were relayed, so only an error frame is left.
    sim = make_sim(script=["malformed"], output_tokens=10, per_token_ms=5)
    gw = make_gateway({"sim": upstream(sim)}, {"chat": route(("sim", "m"))}, routing=routing(attempts=2))
    body = {"model": "chat", "messages": HELLO, "stream": True}
    with httpx.stream("POST", f"{gw.base_url}/chat/completions", json=body, headers=auth(), timeout=30) as response:
        assert response.status_code == 200
        raw = response.read().decode()
    assert "[DONE]" not in raw
    payloads = [json.loads(p) for p in data_payloads(sse_lines(raw))]
    assert all("choices" in p for p in payloads[:-1]) and len(payloads) > 1
    assert payloads[-1]["error"]["code"] == "stream_broken"
    # Bytes had reached the client: no retry behind its back.
    assert recorded_outcomes(sim) == ["malformed"]
    wait_for(lambda: metric(scrape(gw.root_url), "cutover_stream_errors_total", alias="chat", provider="sim") == 1,
             timeout=10, what="the broken stream to be counted")


def test_the_sdk_raises_on_an_undecodable_event(make_sim: SimFactory, make_gateway: GatewayFactory) -> None:
    sim = make_sim(script=["malformed"], output_tokens=10, per_token_ms=5)
    gw = make_gateway({"sim": upstream(sim)}, {"chat": route(("sim", "m"))})
    with sdk(gw) as client:
        stream = client.chat.completions.create(model="chat", messages=HELLO, stream=True)
        with pytest.raises(openai.APIError) as caught:
            for _ in stream:
                pass
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "stream_broken"


def test_an_undecodable_event_before_any_byte_is_retried(make_sim: SimFactory, make_gateway: GatewayFactory) -> None:
    # Unpaced: the whole stream comes in one read, so the bad line is seen before anything is relayed.
    sim = make_sim(script=["malformed"], output_tokens=10)
    gw = make_gateway({"sim": upstream(sim)}, {"chat": route(("sim", "m"))}, routing=routing(attempts=2))
    with sdk(gw) as client:
        chunks = list(client.chat.completions.create(model="chat", messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert recorded_outcomes(sim) == ["malformed", "ok"]


class _Echoing(http.server.BaseHTTPRequestHandler):
    """An upstream whose 4xx echoes where it lives and a masked key, as some do."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        host = self.headers["host"]
        body = json.dumps({"error": {
            "message": f"Unsupported value at http://{host}/v1/chat/completions for key sk-****{UPSTREAM_KEY[-4:]}",
            "type": "invalid_request_error", "param": "temperature", "code": "unsupported_value",
            "upstream_host": host}}).encode()
        self.send_response(400)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_an_upstream_4xx_reaches_the_client_scrubbed(make_gateway: GatewayFactory) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echoing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        gw = make_gateway({"up": upstream(url)}, {"chat": route(("up", "m"))})
        with sdk(gw, max_retries=0) as client, pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="chat", messages=HELLO)
    finally:
        server.shutdown()
    error = caught.value.response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["param"], error["code"]) == ("temperature", "unsupported_value")
    assert_no_leak(caught.value.response, [UPSTREAM_KEY[-4:], host_port(url), "127.0.0.1"])
    assert error["message"].startswith("Unsupported value at [redacted]")
