"""What goes on the wire to each target: the client's own dialect where the upstream speaks it, else the
canonical Chat Completions request the dialect was translated to.

A request in the canonical dialect is left as fitted (the fast path). Otherwise each target that speaks
the client's dialect is sent the client's own body, with its model, on the dialect's path, and answers
pass through; the rest get the translation. A request using something only a native upstream can honour
(`suffix` on a legacy completion, a built-in tool on a Responses call) skips the targets that would need
a translation, and when none is left the client is told which field and which target: nothing is dropped
in silence.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from providers.dispatch import Outbound
from providers.target import TargetRef


@dataclass(frozen=True, slots=True)
class NativeForm:
    """The request in the client's dialect, for upstreams that speak it."""

    dialect: Final[str]
    path: Final[str]
    # The body for one target model.
    body: Final[Callable[[str], dict[str, Any]]]
    # Fields only a native upstream can honour (empty: any target will do).
    native_only: Final[Sequence[str]] = ()


@dataclass(frozen=True, slots=True)
class Unhonoured:
    """The first target left out because the request needs its own dialect there."""

    field: Final[str]
    target: Final[TargetRef]


def choose_wire(
    outbound: Sequence[Outbound], native: NativeForm | None, speaks: Callable[[str, str], bool],
) -> tuple[tuple[Outbound, ...], Unhonoured | None]:
    if native is None:
        return tuple(outbound), None
    wired: list[Outbound] = []
    unhonoured: Unhonoured | None = None
    for out in outbound:
        target = out.target
        # A target whose window needed older turns dropped gets the translation that dropped them.
        if speaks(target.provider, native.dialect) and not out.dropped_messages:
            wired.append(Outbound(target, native.body(target.model), 0, native.path))
        elif native.native_only:
            unhonoured = unhonoured or Unhonoured(native.native_only[0], target)
        else:
            wired.append(out)
    return tuple(wired), unhonoured


def with_model(body: Mapping[str, Any], model: str, **extra: Any) -> dict[str, Any]:
    out = dict(body)
    out["model"] = model
    out.update(extra)
    return out
