"""The demo's terminal view and audit summary (pure text; the demo decides where it goes)."""

from __future__ import annotations

from typing import Any

from migration.window import ArmWindow, StepWindow


def _bar(fraction: float, width: int = 30) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "#" * filled + "." * (width - filled)


def _arm_line(name: str, arm: ArmWindow) -> str:
    p99 = arm.latency.quantile(0.99)
    cost = arm.cost.mean()
    error = arm.error_rate
    return (
        f"  {name:<9} requests {arm.requests:>5}   errors {'-' if error is None else f'{error:6.1%}'}   "
        f"p99 {'-' if p99 is None else f'{p99:7.0f} ms'}   "
        f"cost/request {'-' if cost is None else f'${cost / 1_000_000:.6f}'}"
    )


def _step_label(state: dict[str, Any], plan: dict[str, Any]) -> str:
    if state["phase"] == "canary":
        return f"canary {plan['weights'][state['step_index']]}%"
    return state["phase"]


def render(
    title: str, state: dict[str, Any], window: StepWindow | None, history: list[dict[str, Any]],
    plan: dict[str, Any], elapsed_s: float, sent: int, client_errors: int,
) -> str:
    steps = ["shadow", *(f"canary {w}%" for w in plan["weights"]), "promoted"]
    label = _step_label(state, plan)
    position = steps.index(label) if label in steps else 0
    progress = " > ".join(f"[{s}]" if i == position and label in steps else s for i, s in enumerate(steps))
    lines = [
        f"cutover demo (simulated upstreams)  {title}",
        f"phase {label:<14} candidate weight {state['candidate_weight_bp'] / 100:5.1f}%  "
        f"shadow {state['shadow_percent']:4.1f}%  version {state['version']}",
        f"  {progress}",
        f"  [{_bar(position / (len(steps) - 1))}]  {elapsed_s:5.1f} s   client requests {sent}, "
        f"client-visible errors {client_errors}",
        f"  reason: {state['reason'][:110]}",
        "",
        "this step, both arms:",
    ]
    if window is not None:
        lines += [_arm_line("baseline", window.baseline), _arm_line("candidate", window.candidate)]
    ticks = [e for e in history if e.get("kind") == "tick" and e.get("verdict")]
    if ticks:
        verdict = ticks[-1]["verdict"]
        lines += ["", f"last analysis: {verdict['result']} - {verdict['reason'][:100]}"]
        for gate in verdict["gates"]:
            lines.append(
                f"  {gate['gate']:<22} {gate['result']:<13} estimate {_num(gate.get('estimate'))}  "
                f"bound {_num(gate.get('bound'))}  threshold {_num(gate.get('threshold'))}"
            )
    return "\n".join(lines)


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def summarise_audit(history: list[dict[str, Any]]) -> list[str]:
    ticks = sum(1 for e in history if e.get("kind") == "tick")
    lines = [
        f"  {e['time']}  {e['actor']:<14} {e['action']:<10} {e['from_phase']} -> {e['to_phase']}  "
        f"candidate {e['candidate_weight_bp'] / 100:g}%  {e['reason'][:90]}"
        for e in history
        if e.get("kind") == "transition"
    ]
    return [*lines, f"  ({ticks} analysis ticks recorded, each with its gate figures)"]
