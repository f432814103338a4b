"""The operators' API under /admin/: migrations as feature flags, and per-alias kill switches.

Only admin keys (config `admin.keys`) are accepted; client keys are refused. Every
change to a migration must carry its current version in `If-Match` (the `ETag` of
a GET); a stale one is refused with 409, so two operators cannot overwrite each
other unknowingly. GET /admin/migrations/{id}/report answers the migration's report,
one self-contained HTML page (migration.report). POST /admin/migrations/{id}/replay
runs a pre-flight replay (migration.replay); it changes no state and needs no If-Match.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from config.loader import format_path, validation_problems
from config.migration import MigrationSpec
from gateway.auth import KeyRing
from gateway.errors import (
    AuthenticationFailed,
    GatewayError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    ServiceUnavailable,
)
from gateway.http import JSONBytes
from migration.replay import MAX_CONCURRENCY, replay_entry
from migration.report import render_report
from migration.rollout import (
    Abort,
    MigrationState,
    Pause,
    Promote,
    PromoteFully,
    Resume,
    Retry,
    Rollback,
    SetWeight,
    Start,
)
from migration.service import MigrationError
from migration.wiring import Migrations
from routing.table import RouteTable
from store.base import StoredMigration, StoreUnavailable

# The report loads nothing and runs nothing: a page that tried would be refused.
REPORT_POLICY = "default-src 'none'; style-src 'unsafe-inline'"


class PreconditionRequired(GatewayError):
    status = 428
    type = "invalid_request_error"
    code = "if_match_required"


class Conflict(GatewayError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


class ActionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="", max_length=500)
    # set-weight only: percent of live traffic for the candidate.
    weight: float | None = Field(default=None, ge=0, le=100)


class ReplayBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # The newest this many captured requests; unset: every one still kept.
    limit: int | None = Field(default=None, ge=1, le=100_000)
    # Requests replayed at once (each is one call to each arm).
    concurrency: int = Field(default=4, ge=1, le=MAX_CONCURRENCY)


class KillSwitchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool


def _to_gateway_error(exc: MigrationError | StoreUnavailable) -> GatewayError:
    if isinstance(exc, StoreUnavailable):
        return ServiceUnavailable("The migration store cannot be reached; retry shortly.", code="store_unavailable")
    if exc.status == 404:
        return NotFound(str(exc), code=exc.code)
    if exc.status == 409:
        return Conflict(str(exc), code=exc.code)
    return InvalidRequest(str(exc), code=exc.code)


_Body = TypeVar("_Body", bound=BaseModel)


def _parse(model: type[_Body], raw: bytes) -> _Body:
    try:
        return model.model_validate_json(raw) if raw.strip() else model()
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidRequest(
            f"Invalid body: {first['msg']}", param=".".join(map(str, first["loc"])) or None
        ) from None


def _example(record: bytes) -> dict[str, Any] | None:
    """A stored judged pair; None for one this version cannot read (left out of the report)."""
    try:
        found = orjson.loads(record)
    except orjson.JSONDecodeError:
        return None
    return found if isinstance(found, dict) else None


def _event(action: str, body: ActionBody, actor: str) -> Any:
    reason = body.reason or f"{action} requested"
    makers: dict[str, Any] = {
        "start": lambda now: Start(now, actor=actor),
        "pause": lambda now: Pause(actor, reason),
        "resume": lambda now: Resume(now, actor=actor),
        "promote": lambda now: Promote(now, actor=actor),
        "promote-fully": lambda now: PromoteFully(now, actor=actor),
        "abort": lambda now: Abort(actor, reason),
        "rollback": lambda now: Rollback(actor, reason),
        "retry": lambda now: Retry(now, actor=actor),
    }
    if action == "set-weight":
        if body.weight is None:
            raise InvalidRequest("set-weight needs 'weight' (percent of traffic for the candidate).", param="weight")
        weight_bp = round(body.weight * 100)
        return lambda now: SetWeight(weight_bp, now, actor=actor)
    if action not in makers:
        raise NotFound(f"Unknown migration action '{action[:40]}'.", code="unknown_action")
    return makers[action]


def _version(if_match: str | None) -> int:
    if if_match is None:
        raise PreconditionRequired("Send the migration's current version in If-Match (its ETag).")
    try:
        return int(if_match.strip().strip('"').removeprefix("W/").strip('"'))
    except ValueError:
        raise InvalidRequest("If-Match must be the migration's version, as given in its ETag.") from None


def build_admin_router(
    admin_keys: KeyRing, client_keys: KeyRing, migrations: Migrations, routes: RouteTable
) -> APIRouter:
    """Operators' routes; every one needs an admin key."""

    def admin_key(request: Request) -> str:
        if not admin_keys.has_keys:
            raise PermissionDenied("The admin API is disabled: configure admin.keys to enable it.")
        presented = request.headers.get("authorization", "").encode() or None
        try:
            return admin_keys.identify(presented)
        except AuthenticationFailed:
            try:
                client_keys.identify(presented)
            except AuthenticationFailed:
                raise AuthenticationFailed("Incorrect admin key provided.") from None
            raise PermissionDenied("Client keys cannot use the admin API; use an admin key.") from None

    def describe(stored: StoredMigration) -> dict[str, Any]:
        migration_state = MigrationState.from_dict(stored.state)
        window = migrations.live.local_window(stored.id)
        return {
            "id": stored.id,
            "version": stored.version,
            "spec": stored.spec,
            "state": stored.state,
            "auto_analysis": migration_state.auto_analysis,
            "kill_switch": stored.spec.get("alias") in migrations.live.kill_switches(),
            "local_window": window.to_dict() if window is not None else None,
        }

    def answer(stored: StoredMigration, status: int = 200) -> JSONBytes:
        return JSONBytes(describe(stored), status_code=status, headers={"etag": f'"{stored.version}"'})

    router = APIRouter(prefix="/admin", dependencies=[Depends(admin_key)])
    service = migrations.service

    @router.get("/migrations")
    async def list_migrations() -> JSONBytes:
        try:
            found = await service.list()
        except StoreUnavailable as exc:
            raise _to_gateway_error(exc) from None
        return JSONBytes({"object": "list", "data": [describe(m) for m in found]})

    @router.post("/migrations")
    async def create_migration(request: Request, key: str = Depends(admin_key)) -> JSONBytes:
        try:
            raw = await request.json()
        except ValueError:
            raise InvalidRequest("The body must be a JSON migration spec.") from None
        if not isinstance(raw, dict):
            raise InvalidRequest("The body must be a JSON object.")
        start = raw.pop("start", True)
        try:
            spec = MigrationSpec.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            param = format_path(tuple(first["loc"])) if first["loc"] else None
            problems = "; ".join(validation_problems(exc))
            raise InvalidRequest(f"Invalid migration spec: {problems}", param=param) from None
        try:
            stored = await service.create(spec, key, start=bool(start))
        except (MigrationError, StoreUnavailable) as exc:
            raise _to_gateway_error(exc) from None
        migrations.controller.wake()
        return answer(stored, 201)

    async def described_with_history(migration_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        try:
            stored = await service.get(migration_id)
            history = await service.history(migration_id)
        except (MigrationError, StoreUnavailable) as exc:
            raise _to_gateway_error(exc) from None
        described = describe(stored)
        described["last_verdicts"] = [e["verdict"] for e in history if e.get("kind") == "tick"][-5:]
        return described, history

    @router.get("/migrations/{migration_id}")
    async def get_migration(migration_id: str) -> JSONBytes:
        described, _ = await described_with_history(migration_id)
        version = described["version"]
        return JSONBytes(described, headers={"etag": f'"{version}"'})

    @router.get("/migrations/{migration_id}/report")
    async def migration_report(migration_id: str) -> HTMLResponse:
        """The audit trail and state as one self-contained HTML page (migration.report), with the judged
        pairs kept as examples (`store_examples`)."""
        described, history = await described_with_history(migration_id)
        try:
            examples = [e for e in map(_example, await migrations.store.samples("example", migration_id)) if e]
        except StoreUnavailable as exc:
            raise _to_gateway_error(exc) from None
        page = await asyncio.to_thread(render_report, described, history, examples)
        return HTMLResponse(page, headers={"content-security-policy": REPORT_POLICY, "cache-control": "no-store"})

    @router.get("/migrations/{migration_id}/history")
    async def migration_history(migration_id: str) -> JSONBytes:
        try:
            history = await service.history(migration_id)
        except (MigrationError, StoreUnavailable) as exc:
            raise _to_gateway_error(exc) from None
        return JSONBytes({"object": "list", "id": migration_id, "data": history})

    @router.post("/migrations/{migration_id}/replay")
    async def replay(migration_id: str, request: Request, key: str = Depends(admin_key)) -> JSONBytes:
        """Pre-flight: the alias's captured requests against both arms, judged by the gates (migration.replay).
        Changes no state; the verdict goes into the audit trail."""
        body = _parse(ReplayBody, await request.body())
        try:
            stored = await service.get(migration_id)
            spec = MigrationSpec.model_validate(stored.spec)
            result = await migrations.replayer.replay(spec, body.limit, body.concurrency)
            if not result.captured:
                raise Conflict(f"No captured requests of '{spec.alias}' to replay: set models.{spec.alias}.capture "
                               "and let traffic flow first.", code="nothing_captured")
            state = MigrationState.from_dict(stored.state)
            await service.record(migration_id, replay_entry(result, key, state, time.time()))
        except (MigrationError, StoreUnavailable) as exc:
            raise _to_gateway_error(exc) from None
        return JSONBytes({"object": "migration.replay", **result.to_dict(), "verdict": result.verdict.to_dict()})

    @router.post("/migrations/{migration_id}/{action}")
    async def act(
        migration_id: str,
        action: str,
        request: Request,
        if_match: str | None = Header(default=None),
        key: str = Depends(admin_key),
    ) -> JSONBytes:
        body = _parse(ActionBody, await request.body())
        make: Any = _event(action, body, key)
        expected = _version(if_match)
        try:
            stored = await service.act(migration_id, make, key, if_match=expected)
        except (MigrationError, StoreUnavailable) as exc:
            raise _to_gateway_error(exc) from None
        migrations.controller.wake()
        return answer(stored)

    @router.get("/kill-switches")
    async def kill_switches() -> JSONBytes:
        return JSONBytes({"aliases": sorted(migrations.live.kill_switches())})

    @router.put("/aliases/{alias}/kill-switch")
    async def set_kill_switch(alias: str, body: KillSwitchBody) -> JSONBytes:
        if routes.get(alias) is None:
            raise NotFound(f"No model alias '{alias[:200]}'.", code="model_not_found")
        try:
            await migrations.store.set_kill_switch(alias, body.enabled)
        except StoreUnavailable as exc:
            raise _to_gateway_error(exc) from None
        current = set(migrations.live.kill_switches())
        migrations.live.set_kill_switches(current | {alias} if body.enabled else current - {alias})
        migrations.controller.wake()
        return JSONBytes({"alias": alias, "kill_switch": body.enabled})

    return router
