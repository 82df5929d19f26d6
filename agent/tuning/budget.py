"""The memory budget: one machine's memory, shared by the programs tuned on it.

``[tuning.budget] reserve_mib`` (an expression over the facts) is kept back for the OS and
all that is not tuned; the rest is split between the budget's *members*: every
``[[tuning.profiles]]`` entry whose values read ``memory_mib`` or that has a ``share``, and
every ``[[tuning.files]]`` entry that has a ``share``. A member with a share gets that fraction
of it; those without split what the others leave, equally. Inside a member ``memory_mib`` is
its portion (``machine_memory_mib`` stays the whole machine); everywhere else (a file without
a share, drop-ins, sysctls, templates, the reserve's own expression) it is the machine's.
A profile's values, added up at the program's limits
(:func:`agent.tuning.profiles.limits`), must fit
in its portion: a type too small for the configured programs is a
:class:`~agent.errors.TuningError` naming the type and the program.

Pure arithmetic: :mod:`agent.tuning.config` checks the shares at load with :func:`split`,
:mod:`agent.tuning.tuner` computes the portions with :func:`portions` and checks each fit with
:func:`check_fit`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import field

from agent.errors import TuningError
from agent.frozen import frozen
from agent.schema.expr import Explanation, ExprError, Expression, Value, render_value

_EPSILON = 1e-9  # 0.1 + 0.2 + 0.7 is 1 here


@frozen()
class Claim:
    """A member of the budget as configured: its key, its output's label, its share."""

    key: str  # "profiles[0]", "files[1]"
    label: str  # "profile jvm -> /run/agent/tuning/jvm.env", as plan names the output
    share: float | None  # None: an equal part of what the shares given leave


def split(claims: Sequence[Claim]) -> list[float]:
    """Each claim's fraction of the budget; ValueError naming the key when they cannot add up."""
    running = 0.0
    for claim in claims:
        if claim.share is None:
            continue
        running += claim.share
        if running > 1 + _EPSILON:
            given = ", ".join(f"{c.key} {c.share:g}" for c in claims if c.share is not None)
            total = math.fsum(c.share for c in claims if c.share is not None)
            raise ValueError(f"{claim.key}.share: the shares add up to {total:g} ({given}), "
                             "more than the whole budget (1)")
    left = max(0.0, 1 - math.fsum(c.share for c in claims if c.share is not None))
    equal = [c for c in claims if c.share is None]
    if equal and left < _EPSILON:
        raise ValueError(f"{equal[0].key} ({equal[0].label}) has no share, and the shares "
                         "given add up to 1: nothing is left for it")
    return [left / len(equal) if c.share is None else c.share for c in claims]


@frozen()
class Term:
    """One term of what a member's values add up to at the program's limits."""

    name: str
    mib: float
    detail: str = ""


@frozen()
class Portion:
    """A member's part of the budget, and (profiles) what its values add up to."""

    claim: Claim
    fraction: float
    memory_mib: int
    terms: tuple[Term, ...] = ()  # empty for a file: its values are its own
    checked: bool = False  # a profile: its terms are known and checked against memory_mib

    @property
    def total_mib(self) -> float:
        """What its values add up to (0 when not known)."""
        return math.fsum(term.mib for term in self.terms)


@frozen()
class Budget:
    """The machine's memory, the reserve, and each member's portion."""

    memory_mib: int  # the whole machine
    reserve_expression: str
    reserve: Explanation
    reserve_mib: int
    portions: list[Portion]
    outside: list[str] = field(default_factory=list)  # profiles that take no share

    @property
    def available_mib(self) -> int:
        """What the members share: the memory less the reserve."""
        return self.memory_mib - self.reserve_mib

    def portion(self, key: str) -> Portion | None:
        """The portion of the member at ``key`` (None: not a member)."""
        return next((p for p in self.portions if p.claim.key == key), None)


def reserve(expression: Expression, facts: Mapping[str, Value]) -> tuple[Explanation, int]:
    """The reserve's explanation and its whole MiB (a fraction rounds up); TuningError."""
    try:
        explanation = expression.explain(facts)
    except ExprError as exc:
        raise TuningError(f"tuning budget.reserve_mib: {exc}") from None
    value = explanation.result
    if isinstance(value, str):
        raise TuningError(f"tuning budget.reserve_mib: needs a number, got {value!r}")
    if value < 0:
        raise TuningError(f"tuning budget.reserve_mib: must be at least 0, got "
                          f"{render_value(value)}")
    return explanation, math.ceil(value)


def portions(claims: Sequence[Claim], expression: Expression, facts: Mapping[str, Value],
             outside: Sequence[str] = ()) -> Budget:
    """Each claim's portion of this machine's memory less the reserve; TuningError when
    nothing is left for them."""
    memory = facts["memory_mib"]
    assert isinstance(memory, int)
    explanation, reserved = reserve(expression, facts)
    available = memory - reserved
    try:
        fractions = split(claims)
    except ValueError as exc:  # checked at load; a configuration built in code may skip that
        raise TuningError(f"tuning: {exc}") from None
    found = []
    for claim, fraction in zip(claims, fractions, strict=True):
        mib = math.floor(fraction * available + _EPSILON)
        if mib < 1:
            raise TuningError(f"tuning: {facts['instance_type']} ({memory} MiB) is too small "
                              f"for {claim.label}: the {reserved} MiB reserve leaves "
                              f"{max(available, 0)} MiB" + (
                                  f", {fraction:g} of it under 1 MiB" if available > 0 else ""))
        found.append(Portion(claim, fraction, mib))
    return Budget(memory, expression.text, explanation, reserved, found, list(outside))


def check_fit(budget: Budget, portion: Portion, instance_type: str) -> None:
    """TuningError naming the type and the program when its values do not fit its portion."""
    if not portion.checked or portion.total_mib <= portion.memory_mib:
        return
    terms = " + ".join(f"{term.name} {mib_text(term.mib)}" for term in portion.terms)
    raise TuningError(
        f"tuning: {instance_type} is too small for {portion.claim.label}: its values add up to "
        f"{mib_text(portion.total_mib)} MiB at the program's limits ({terms}), above its "
        f"{portion.memory_mib} MiB ({portion.fraction:.3g} of {budget.available_mib} MiB, "
        f"{budget.memory_mib} MiB less the {budget.reserve_mib} MiB reserve)")


def mib_text(value: float) -> str:
    """MiB for people: whole, or with one decimal."""
    return render_value(round(value, 1))
