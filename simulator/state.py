"""Mutable per-server state: current settings, RNG, script cursor, recordings."""

from __future__ import annotations

import asyncio
import os
import random
from collections import deque
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from simulator.behaviour import SimulationSettings, decide_outcome
from simulator.quality import Occurrences
from simulator.wire import ReplyPlan, generated_pieces, split_pieces


@dataclass(slots=True)
class RecordedRequest:
    """One request as the simulator saw it; ``ended_at`` is set when the answer is done."""

    seq: int
    path: str
    model: str | None
    stream: bool
    body: Any
    outcome: str
    started_at: float
    ended_at: float | None
    authorization: str | None
    request_id: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "path": self.path,
            "model": self.model,
            "stream": self.stream,
            "body": self.body,
            "outcome": self.outcome,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "headers": {"authorization": self.authorization, "x-request-id": self.request_id},
        }


class SimulatorState:
    """State shared by the handlers of one simulator app.

    Only ever touched from the server's event loop, so no locking is needed;
    code on other threads must hop onto that loop (see ``BackgroundSimulator``).
    """

    def __init__(self, settings: SimulationSettings) -> None:
        # Distinguishes completion ids of several simulators running side by side.
        self._id_tag = os.urandom(4).hex()
        self._seq = 0
        self.records: deque[RecordedRequest] = deque(maxlen=settings.record_limit)
        self.stopping = asyncio.Event()
        self.settings = settings
        self.rng = random.Random(settings.seed)
        self.script_pos = 0
        self._plans: dict[str | None, ReplyPlan] = {}
        # How often each request was seen, for the quality knob's reproducible draws (simulator.quality).
        self.occurrences = Occurrences()
        self.replace_settings(settings)

    def replace_settings(self, settings: SimulationSettings) -> None:
        """Swap behaviour; restarts the script and the RNG so runs are repeatable."""
        self.settings = settings
        self.rng = random.Random(settings.seed)
        self.script_pos = 0
        self._plans = {}
        if self.records.maxlen != settings.record_limit:
            self.records = deque(self.records, maxlen=settings.record_limit)

    def next_outcome(self, settings: SimulationSettings) -> str:
        outcome = decide_outcome(self.rng, settings, self.script_pos)
        self.script_pos += 1
        return outcome

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def completion_id(self, seq: int) -> str:
        return f"chatcmpl-sim-{self._id_tag}{seq:08x}"

    def first_delay_s(self, settings: SimulationSettings) -> float:
        delay_ms = settings.first_token_ms
        if settings.jitter_ms:
            delay_ms = max(0.0, delay_ms + self.rng.uniform(-settings.jitter_ms, settings.jitter_ms))
        return delay_ms / 1000.0

    def plan_for(self, settings: SimulationSettings, model: str, structured: str | None = None) -> ReplyPlan:
        """Reply pieces for ``model``, cached until the settings change; a request for structured output
        without a fixed reply gets its JSON (``structured``) instead of filler."""
        if structured is not None and model not in settings.replies and settings.reply is None:
            return ReplyPlan.from_pieces(split_pieces(structured))
        text = settings.replies.get(model, settings.reply)
        key = model if model in settings.replies else None
        plan = self._plans.get(key)
        if plan is None or settings is not self.settings:
            if text is None:
                plan = ReplyPlan.from_pieces(generated_pieces(settings.output_tokens))
            else:
                plan = ReplyPlan.from_pieces(split_pieces(text))
            if settings is self.settings:
                self._plans[key] = plan
        return plan

    def record(
        self,
        *,
        seq: int,
        path: str,
        model: str | None,
        stream: bool,
        body: Any,
        outcome: str,
        started_at: float,
        headers: Any,
    ) -> RecordedRequest | None:
        if not self.settings.record:
            return None
        entry = RecordedRequest(
            seq=seq,
            path=path,
            model=model,
            stream=stream,
            body=body,
            outcome=outcome,
            started_at=started_at,
            ended_at=None,
            authorization=headers.get("Authorization"),
            request_id=headers.get("X-Request-Id"),
        )
        self.records.append(entry)
        return entry


STATE_KEY: Final = web.AppKey("cutover_simulator_state", SimulatorState)
