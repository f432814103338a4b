"""What the client is told when no target answered: the final error of the last failure."""

from __future__ import annotations

import pytest

from gateway.errors import BadGateway, GatewayError, GatewayTimeout, RateLimited, ServiceUnavailable
from gateway.failures import final_error
from providers.errors import (
    ProviderError,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamStreamBroken,
    UpstreamTimeout,
)
from tests.support import upstream_status as status

ALIAS = "gpt-4"


@pytest.mark.parametrize(
    ("error", "cls", "headers"),
    [
        (status(429, retry_after=2.2), RateLimited, {"retry-after": "3"}),
        (status(429, retry_after=0.0), RateLimited, {"retry-after": "1"}),
        (status(429), RateLimited, {"retry-after": "1"}),
        (status(401), BadGateway, {}),
        (status(403), BadGateway, {}),
        (status(408), GatewayTimeout, {}),
        (status(500), BadGateway, {}),
        (status(502), BadGateway, {}),
        (status(503), ServiceUnavailable, {}),
        (UpstreamTimeout("x"), GatewayTimeout, {}),
        (UpstreamConnectError("x"), ServiceUnavailable, {}),
        (UpstreamProtocolError("x"), BadGateway, {}),
        (UpstreamStreamBroken("x"), BadGateway, {}),
        (None, BadGateway, {}),
    ],
)
def test_final_error_mapping(error: ProviderError | None, cls: type[GatewayError], headers: dict[str, str]) -> None:
    err = final_error(error, ALIAS)
    assert type(err) is cls
    assert err.headers == headers
    assert ALIAS in err.message


def test_rate_limited_message_matches_header() -> None:
    err = final_error(status(429, retry_after=0.0), ALIAS)
    assert f"retry after {err.headers['retry-after']} s" in err.message
