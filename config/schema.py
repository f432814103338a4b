"""The configuration file's shape.

Every model forbids unknown keys and is frozen: the config is validated once at
start-up and handed down as immutable objects. Cross-references (a target naming
a provider, a price for an upstream model) are checked in `config.loader`, which
can name the exact path of a bad value.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator

from config.base import NonNegFloat, PosFloat, Strict, Target
from config.migration import MigrationSpec
from simulator.behaviour import SimulationSettings

Price = Annotated[Decimal, Field(ge=0)]


class Timeouts(Strict):
    connect: PosFloat = 5.0
    read: PosFloat = 60.0
    total: PosFloat = 300.0


class ProviderConfig(Strict):
    type: Literal["openai", "simulated"]
    base_url: str | None = None
    api_key: SecretStr | None = None
    timeouts: Timeouts = Timeouts()
    pool_size: Annotated[int, Field(ge=1, le=10_000)] = 256
    headers: dict[str, str] = {}
    # The OpenAI dialects the upstream serves itself. A request in one of them passes through untouched;
    # in another, it is translated to Chat Completions, which every OpenAI-compatible server speaks.
    # Unset: chat only, or every dialect for the bundled simulator.
    dialects: list[Literal["chat", "completions", "responses"]] | None = None
    # Only for type "simulated": the in-process simulator's behaviour.
    simulation: SimulationSettings | None = None

    def native_dialects(self) -> frozenset[str]:
        if self.dialects is not None:
            return frozenset(self.dialects) | {"chat"}
        return frozenset({"chat", "completions", "responses"} if self.type == "simulated" else {"chat"})

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


class CaptureSettings(Strict):
    """A sample of the alias's requests kept for a pre-flight replay (migration.capture, migration.replay).

    Opt-in: the prompts are stored (in the gateway's store) until they expire. Answers are not kept.
    """

    # Share of the alias's requests captured.
    sample: Annotated[float, Field(gt=0, le=1)] = 0.01
    # Only the newest this many are kept.
    max_requests: Annotated[int, Field(ge=1, le=100_000)] = 1000
    retention_s: PosFloat = 7 * 24 * 3600.0
    # Requests offering tools are not captured (their prompts may hold private data).
    exclude_tools: bool = False


class ModelRoute(Strict):
    targets: Annotated[list[Target], Field(min_length=1)]
    on_context_overflow: Literal["error", "truncate_oldest"] = "error"
    description: str | None = None
    # false: no request of this alias is ever shown to a migration's quality judge.
    judge: bool = True
    capture: CaptureSettings | None = None


class ModelPrice(Strict):
    """USD per million tokens, and the model's context window in tokens."""

    input: Price = Decimal(0)
    cached_input: Price | None = None
    output: Price = Decimal(0)
    # Reasoning tokens, when the provider bills them apart from other output (unset: the output price).
    reasoning: Price | None = None
    context_window: Annotated[int, Field(ge=1)] | None = None


class ClientKey(Strict):
    name: str
    # "sha256:<hex>" of the key; see `cutover hash-key`.
    hash: str | None = None
    # A plain key taken from an environment variable at start-up (hashed at once).
    key_env: str | None = None

    @field_validator("hash")
    @classmethod
    def _sha256(cls, value: str | None) -> str | None:
        if value is None:
            return value
        prefix, _, digest = value.partition(":")
        if prefix != "sha256" or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError("must be 'sha256:' followed by 64 lowercase hex digits")
        return value


class AuthConfig(Strict):
    mode: Literal["keys", "none"] = "keys"
    keys: list[ClientKey] = []


class RetryConfig(Strict):
    max_attempts_per_target: Annotated[int, Field(ge=1, le=10)] = 2
    initial_backoff_s: NonNegFloat = 0.1
    max_backoff_s: NonNegFloat = 2.0
    jitter_s: NonNegFloat = 0.1
    # Upstream Retry-After is honoured up to this many seconds; a longer wait
    # moves on to the next target instead of holding the client.
    retry_after_cap_s: NonNegFloat = 5.0


class BreakerConfig(Strict):
    failure_threshold: Annotated[int, Field(ge=1)] = 5
    cooldown_s: PosFloat = 30.0


class RoutingConfig(Strict):
    retry: RetryConfig = RetryConfig()
    circuit_breaker: BreakerConfig = BreakerConfig()


class ServerConfig(Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    max_body_bytes: Annotated[int, Field(ge=1024)] = 4 * 1024 * 1024
    request_log: bool = True
    # The longest a finished request's log line waits in memory before it is written.
    request_log_flush_s: PosFloat = 0.1
    log_bodies: bool = False
    shutdown_grace_s: NonNegFloat = 30.0
    # Per connection (gateway/connection.py): a request's head and body must arrive in time, its head
    # must be small, and one worker holds at most max_connections (unset: half the open-file limit).
    header_timeout_s: PosFloat = 10.0
    body_timeout_s: PosFloat = 60.0
    max_header_bytes: Annotated[int, Field(ge=1024)] = 32 * 1024
    max_connections: Annotated[int, Field(ge=1)] | None = None


class StoreConfig(Strict):
    """Where migration state and its audit trail live (see store/)."""

    backend: Literal["sqlite", "redis", "memory"] = "sqlite"
    path: str = "cutover-state.sqlite"
    url: str | None = None
    prefix: str = "cutover"
    timeout_s: PosFloat = 1.0


class AdminConfig(Strict):
    """Keys for /admin/ (client keys cannot use it). No keys: the admin API is closed."""

    keys: list[ClientKey] = []


class ControllerConfig(Strict):
    # How often every replica re-reads migration state and pushes its outcome counts:
    # the bound on how long a rollback takes to reach all replicas.
    sync_interval_s: PosFloat = 0.5
    # One replica at a time runs the analysis; its lease expires this long after its last renewal.
    lease_ttl_s: PosFloat = 5.0


class PlanCaps(Strict):
    """Hard limits no planner output can exceed."""

    max_replans: Annotated[int, Field(ge=0, le=10)] = 1
    max_tasks: Annotated[int, Field(ge=1, le=256)] = 32
    max_llm_calls: Annotated[int, Field(ge=2, le=1000)] = 64
    max_total_tokens: Annotated[int, Field(ge=100)] = 200_000
    max_cost_usd: Price = Decimal("1.00")
    # Per round of gateway work; a run waiting for the client's tool results is not on the clock.
    deadline_s: PosFloat = 120.0
    # Tool calls of a whole run (the client's and MCP servers'), across its round trips.
    max_tool_calls: Annotated[int, Field(ge=0, le=1000)] = 16


class PlanShape(Strict):
    max_tasks_per_round: Annotated[int, Field(ge=1, le=256)] = 16
    max_depth: Annotated[int, Field(ge=1, le=64)] = 8
    max_fan_in: Annotated[int, Field(ge=1, le=64)] = 8
    max_task_tokens: Annotated[int, Field(ge=1)] = 4096


class FastPath(Strict):
    """Short single-message requests skip planning and go to one executor call."""

    enabled: bool = True
    max_prompt_chars: Annotated[int, Field(ge=0)] = 160


class PlanCache(Strict):
    enabled: bool = False
    max_entries: Annotated[int, Field(ge=1)] = 1000
    ttl_s: PosFloat = 3600.0


class McpServerConfig(Strict):
    """An MCP server whose tools plan-and-execute runs may call inside the gateway.

    Exactly one of `url` (streamable HTTP) or `command` (a stdio server the gateway starts)."""

    url: str | None = None
    command: list[str] | None = None
    env: dict[str, str] = {}
    # Sent with every HTTP request to the server (an API key, say); never logged.
    headers: dict[str, SecretStr] = {}
    # One tool call, from sending it to its result.
    timeout_s: PosFloat = 30.0
    # Extra attempts after a failed call, only for tools the server marks read-only or idempotent.
    retries: Annotated[int, Field(ge=0, le=5)] = 1
    # Calls in flight to this server at once, across all runs of this process.
    concurrency: Annotated[int, Field(ge=1, le=256)] = 8
    connect_timeout_s: PosFloat = 10.0

    @field_validator("command")
    @classmethod
    def _command_not_empty(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("command must name a program")
        return value


class MetaModelConfig(Strict):
    """A model name the gateway serves itself by planning once and executing on cheaper models.
    Planner, joiner and executors are aliases of this config, so their calls get the same
    routing, fallbacks, cool-downs and migrations as any client call."""

    planner: str
    executors: dict[Literal["cheap", "strong"], str]
    joiner: str | None = None
    # "json_schema" asks the planner for structured output; "json_object" for upstreams without it.
    planner_json: Literal["json_schema", "json_object"] = "json_schema"
    caps: PlanCaps = PlanCaps()
    shape: PlanShape = PlanShape()
    concurrency: Annotated[int, Field(ge=1, le=64)] = 5
    # Per executor alias within one run; the default does not bind below `concurrency`.
    per_alias_concurrency: Annotated[int, Field(ge=1, le=64)] = 5
    task_timeout_s: PosFloat = 60.0
    task_retries: Annotated[int, Field(ge=0, le=5)] = 1
    input_chars: Annotated[int, Field(ge=100)] = 4000
    fast_path: FastPath = FastPath()
    cache: PlanCache = PlanCache()
    description: str | None = None
    # Whether the client's own `tools` may be offered to the planner (else such a request is a 400).
    client_tools: bool = True
    # Names from the top-level `mcp_servers` whose tools the planner may use.
    mcp_servers: list[str] = []
    # How long a run waiting for the client's tool results is kept in the store.
    run_retention_s: PosFloat = 3600.0


class ResponsesConfig(Strict):
    """Responses API turns kept for previous_response_id and GET /v1/responses/{id} (gateway.conversations)."""

    # OpenAI keeps stored responses for 30 days.
    retention_s: PosFloat = 30 * 24 * 3600.0
    # A conversation past this size is still answered, but its turn is not kept.
    max_stored_bytes: Annotated[int, Field(ge=1024)] = 4 * 1024 * 1024


class GatewayConfig(Strict):
    server: ServerConfig = ServerConfig()
    auth: AuthConfig = AuthConfig()
    providers: dict[str, ProviderConfig]
    models: dict[str, ModelRoute]
    # Keyed by upstream model name, or "provider/model" to price one provider's copy.
    prices: dict[str, ModelPrice] = {}
    routing: RoutingConfig = RoutingConfig()
    store: StoreConfig = StoreConfig()
    admin: AdminConfig = AdminConfig()
    controller: ControllerConfig = ControllerConfig()
    responses: ResponsesConfig = ResponsesConfig()
    migrations: list[MigrationSpec] = []
    mcp_servers: dict[str, McpServerConfig] = {}
    meta_models: dict[str, MetaModelConfig] = {}
