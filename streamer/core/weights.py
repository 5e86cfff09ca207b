"""Harm weights: what an event of a category and origin is worth.

Categories map to a harm weight, a family and whether they count at all.
Proactive-origin records and enforcement-driven categories (those that
measure where police already are) can be scaled down or excluded, so the
ranking does not send patrols back to where patrols already were.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class CategoryWeight:
    """The rule for one category."""

    weight: float = 1.0
    family: str = "other"
    include: bool = True
    enforcement: bool = False


@dataclass(frozen=True, slots=True)
class Weighing:
    """The outcome for one event: ``weight`` 0 means it does not count."""

    weight: float
    family: str
    known: bool


@dataclass(frozen=True, slots=True)
class WeightTable:
    """Category rules plus the feedback-loop multipliers.

    >>> table = WeightTable({"Robbery": CategoryWeight(365.0, "robbery")},
    ...                     proactive_factor=0.5)
    >>> table.weigh("Robbery", "proactive")
    Weighing(weight=182.5, family='robbery', known=True)
    >>> table.weigh("Unheard of", "reported")
    Weighing(weight=1.0, family='other', known=False)
    """

    rules: Mapping[str, CategoryWeight] = field(default_factory=dict)
    default: CategoryWeight = CategoryWeight()
    proactive_factor: float = 1.0
    enforcement_factor: float = 1.0

    def weigh(self, category: str, origin: str) -> Weighing:
        """The weight and family of an event of ``category`` and ``origin``."""
        rule = self.rules.get(category)
        known = rule is not None
        if rule is None:
            rule = self.default
        weight = rule.weight if rule.include else 0.0
        if rule.enforcement:
            weight *= self.enforcement_factor
        if origin == "proactive":
            weight *= self.proactive_factor
        return Weighing(weight, rule.family, known)

    @property
    def families(self) -> list[str]:
        """Every family named in the table."""
        return sorted({r.family for r in self.rules.values()} | {self.default.family})
