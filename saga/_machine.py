"""The saga state machine: declared once, from a definition's steps, with ``transitions``.

A definition is an ordered list of steps; each step moves the saga from the state the
previous step reached to its own ``reaches`` state. One step is the *pivot* (for the
dual write: the SQLite commit). Every state before the pivot's can compensate; from the
pivot on, the saga only rolls forward. The dual-write definitions give exactly:

    pending --write_vectors--> vector_written --commit_rows--> sqlite_committed
    sqlite_committed --finish--> synced
    pending, vector_written --compensate--> compensating --compensated--> failed

The ``transitions`` machine built here is the single source of truth: ``SagaMachine``
answers every "may I move?" question from it, and ``saga.diagram`` draws it.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Any

import attrs
from transitions import Machine

from saga._errors import IllegalTransitionError

if TYPE_CHECKING:
    from saga._steps import Step

PENDING = "pending"
VECTOR_WRITTEN = "vector_written"
SQLITE_COMMITTED = "sqlite_committed"
SYNCED = "synced"
COMPENSATING = "compensating"
FAILED = "failed"

BEGIN = "begin"
FINISH = "finish"
COMPENSATE = "compensate"
COMPENSATED = "compensated"

TERMINAL = frozenset({SYNCED, FAILED})
RESERVED_STATES = frozenset({PENDING, SYNCED, COMPENSATING, FAILED})
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


@attrs.frozen
class SagaDefinition:
    """A saga: a name, its ordered steps, and which step is the pivot."""

    name: str
    steps: tuple[Step, ...]
    pivot: str

    def __attrs_post_init__(self) -> None:
        names = [step.name for step in self.steps]
        reached = [step.reaches for step in self.steps]
        if not self.steps:
            raise ValueError(f"saga {self.name!r} has no steps")
        if self.pivot not in names:
            raise ValueError(f"saga {self.name!r}: pivot {self.pivot!r} is not one of {names}")
        for label in [self.name, *names, *reached]:
            if not _NAME.match(label):
                raise ValueError(f"saga {self.name!r}: bad name {label!r}")
        if len(set(names)) != len(names) or len(set(reached)) != len(reached):
            raise ValueError(f"saga {self.name!r}: step names and states must be unique")
        if set(reached) & RESERVED_STATES or set(names) & {BEGIN, FINISH, COMPENSATE}:
            raise ValueError(f"saga {self.name!r}: a step reuses a reserved name")

    @property
    def pivot_index(self) -> int:
        return [step.name for step in self.steps].index(self.pivot)


class SagaMachine:
    """The ``transitions`` machine of one definition, used as a rule book.

    It holds no per-saga model: a saga's state lives in the saga log, and each move is
    checked here against the machine's own transition table before it is persisted.
    """

    def __init__(self, definition: SagaDefinition) -> None:
        self.definition = definition
        self.machine = Machine(
            model=None,
            states=states_of(definition),
            transitions=transitions_of(definition),
            initial=PENDING,
            auto_transitions=False,
        )

    def next_state(self, source: str, event: str) -> str:
        """The state ``event`` leads to from ``source``; raise if the move is illegal."""
        event_obj = self.machine.events.get(event)
        moves = event_obj.transitions.get(source) if event_obj is not None else None
        if not moves:
            raise IllegalTransitionError(
                f"saga {self.definition.name!r}: no transition {event!r} from {source!r}"
            )
        return str(moves[0].dest)

    def table(self) -> list[tuple[str, str, str]]:
        """Every (source, event, dest) of the machine, read back from ``transitions``."""
        rows: list[tuple[str, str, str]] = []
        for name, event in self.machine.events.items():
            for source, moves in event.transitions.items():
                rows.extend((source, name, str(move.dest)) for move in moves)
        return sorted(rows)

    def state_names(self) -> list[str]:
        return list(self.machine.states)

    def step_from(self, state: str) -> Step | None:
        """The step that runs next in ``state``, or None when only ``finish`` is left."""
        position = self.position(state)
        steps = self.definition.steps
        return steps[position] if position < len(steps) else None

    def position(self, state: str) -> int:
        """How many steps are done in forward state ``state``."""
        if state == PENDING:
            return 0
        reached = [step.reaches for step in self.definition.steps]
        if state not in reached:
            raise IllegalTransitionError(f"{state!r} is not a forward state")
        return reached.index(state) + 1

    def can_compensate(self, state: str) -> bool:
        """Whether the saga is still before its pivot (and so may be undone)."""
        return state == PENDING or (
            state in self._forward_states() and self.position(state) <= self.definition.pivot_index
        )

    def _forward_states(self) -> list[str]:
        return [PENDING, *(step.reaches for step in self.definition.steps)]


def states_of(definition: SagaDefinition) -> list[str]:
    """The states of a definition, in the order the diagram lists them."""
    return [PENDING, *(s.reaches for s in definition.steps), SYNCED, COMPENSATING, FAILED]


def transitions_of(definition: SagaDefinition) -> list[dict[str, Any]]:
    """The transitions of a definition, as ``transitions`` wants them."""
    moves: list[dict[str, Any]] = []
    source = PENDING
    for step in definition.steps:
        moves.append({"trigger": step.name, "source": source, "dest": step.reaches})
        source = step.reaches
    moves.append({"trigger": FINISH, "source": source, "dest": SYNCED})
    before_pivot = [PENDING, *(s.reaches for s in definition.steps[: definition.pivot_index])]
    moves.append({"trigger": COMPENSATE, "source": before_pivot, "dest": COMPENSATING})
    moves.append({"trigger": COMPENSATED, "source": COMPENSATING, "dest": FAILED})
    return moves


@functools.cache
def machine_for(definition: SagaDefinition) -> SagaMachine:
    """One machine per definition, built once (definitions are frozen and hashable)."""
    return SagaMachine(definition)
