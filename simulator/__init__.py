"""cutover simulator: a fake OpenAI-compatible upstream for tests, demos and benchmarks.

Every answer is labelled (``x-cutover-simulator: true`` header, generated text
starting with ``[simulated]``) so it can never be mistaken for a real model.
"""

from simulator.app import SimulatorServer, create_sim_app, run_simulator
from simulator.behaviour import FAULT_KINDS, OK, SCRIPT_STEPS, SimulationSettings, decide_outcome
from simulator.state import STATE_KEY, RecordedRequest, SimulatorState
from simulator.threaded import BackgroundSimulator
from simulator.wire import estimate_prompt_tokens

__all__ = [
    "FAULT_KINDS",
    "OK",
    "SCRIPT_STEPS",
    "STATE_KEY",
    "BackgroundSimulator",
    "RecordedRequest",
    "SimulationSettings",
    "SimulatorServer",
    "SimulatorState",
    "create_sim_app",
    "decide_outcome",
    "estimate_prompt_tokens",
    "run_simulator",
]
