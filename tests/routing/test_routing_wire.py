"""choose_wire: the client's own dialect to targets that speak it, the translation to the rest."""

from __future__ import annotations

from typing import Any

from providers.dispatch import Outbound
from providers.target import TargetRef
from routing.wire import NativeForm, Unhonoured, choose_wire

NATIVE = TargetRef("native", "n-model")
CHAT = TargetRef("chat", "c-model")
SPEAKS = {("native", "completions"), ("native", "chat"), ("chat", "chat")}


def speaks(provider: str, dialect: str) -> bool:
    return (provider, dialect) in SPEAKS


def form(*native_only: str) -> NativeForm:
    return NativeForm("completions", "/completions", lambda model: {"model": model, "prompt": "x"}, native_only)


def translated(target: TargetRef, dropped: int = 0) -> Outbound:
    payload: dict[str, Any] = {"model": target.model, "messages": [{"role": "user", "content": "x"}]}
    return Outbound(target, payload, dropped)


def test_a_canonical_request_is_left_as_fitted() -> None:
    outbound = (translated(CHAT), translated(NATIVE))
    assert choose_wire(outbound, None, speaks) == (outbound, None)


def test_native_targets_get_the_clients_body_on_the_dialects_path() -> None:
    wired, unhonoured = choose_wire((translated(CHAT), translated(NATIVE)), form(), speaks)
    assert unhonoured is None
    assert wired == (translated(CHAT), Outbound(NATIVE, {"model": "n-model", "prompt": "x"}, 0, "/completions"))


def test_native_only_fields_skip_translated_targets_and_name_the_first() -> None:
    wired, unhonoured = choose_wire((translated(CHAT), translated(NATIVE)), form("suffix", "echo"), speaks)
    assert [o.target for o in wired] == [NATIVE]
    assert unhonoured == Unhonoured("suffix", CHAT)
    assert choose_wire((translated(CHAT),), form("suffix"), speaks) == ((), Unhonoured("suffix", CHAT))


def test_a_target_whose_turns_were_dropped_keeps_the_translation_that_dropped_them() -> None:
    wired, _ = choose_wire((translated(NATIVE, dropped=2),), form(), speaks)
    assert wired == (translated(NATIVE, dropped=2),)
