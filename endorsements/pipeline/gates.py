"""Gates the scheduler consults before it locks funds for a window's requests.

Another app (the velocity breaker, say) registers a gate once at start-up:

    from endorsements.pipeline.gates import gate_register
    gate_register(my_gate)        # my_gate(endorsements) -> {endorsement_id: reason}

A gate gets the validated requests a window is about to lock funds for (or send, for
credits) and returns the ones to hold for an operator's review, each with its reason.
The scheduler moves those to `ON_HOLD_REVIEW` and carries on with the rest; an operator
approves (back to the scheduler) or rejects (`REJECTED`). A gate must be quick and must
not write: it only answers. A gate that raises holds nobody and is logged.
"""

from collections.abc import Callable, Mapping, Sequence

import structlog

log = structlog.get_logger(__name__)

Gate = Callable[[Sequence], Mapping[int, str]]
_gates: list[Gate] = []


def gate_register(gate: Gate) -> None:
    """Register a gate; registering the same callable twice is a no-op."""
    if gate not in _gates:
        _gates.append(gate)


def gate_unregister(gate: Gate) -> None:
    if gate in _gates:
        _gates.remove(gate)


def gates_consult(endorsements: Sequence) -> dict[int, str]:
    """{endorsement_id: reason} for every request some gate holds (reasons of several gates joined)."""
    held: dict[int, list[str]] = {}
    for gate in list(_gates):
        try:
            answer = gate(endorsements)
        except Exception:
            log.exception("endorsement.gate_failed", gate=getattr(gate, "__qualname__", "?"))
            continue
        for endorsement_id, reason in answer.items():
            held.setdefault(endorsement_id, []).append(reason)
    return {endorsement_id: "; ".join(reasons) for endorsement_id, reasons in held.items()}
