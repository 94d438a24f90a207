"""Which of a profile's rails run, where, and which cannot run without a missing model:
plain data computed from a Profile and a ModelSet, without NeMo.

Two lanes (see engine.py for why):
    DIRECT  Bastion's model-free rails: their registry action is dispatched through
            NeMo's ActionDispatcher, on input before the model and on output on every
            released piece of the reply, before it is shown.
    NEMO    rails that use a model, and flows a profile defines in its own Colang:
            NeMo's Colang runtime on input, NeMo's streaming output rails on output.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from bastion_guardrails.decisions import Stage
from bastion_guardrails.models import SAFETY_ROLE, ModelSet
from bastion_guardrails.profile import ConfiguredFlow, Profile, Strictness
from bastion_guardrails.rail_actions import MASK


class Lane(StrEnum):
    DIRECT = "direct"
    NEMO = "nemo"


@dataclass(frozen=True)
class PlannedRail:
    flow: ConfiguredFlow
    lane: Lane
    missing_roles: frozenset[str]
    checked_by: str = ""  # for a rail that uses a model: which one, in words

    @property
    def name(self) -> str:
        return self.flow.name

    @property
    def in_force(self) -> bool:
        return not self.missing_roles

    @property
    def masks(self) -> bool:
        return self.flow.library is not None and self.flow.library.mode == MASK

    @property
    def title(self) -> str:
        if self.flow.library is not None:
            spec = self.flow.library.spec
            if self.checked_by and spec.role is not None:
                return f"{spec.key.replace('_', ' ')} ({self.checked_by})"
            return spec.title
        return f"the profile's rail '{self.flow.name}'"


@dataclass(frozen=True)
class ProfilePlan:
    profile: Profile
    models: ModelSet
    input: tuple[PlannedRail, ...]
    output: tuple[PlannedRail, ...]

    def rails(self, stage: Stage, lane: Lane | None = None) -> tuple[PlannedRail, ...]:
        rails = self.input if stage is Stage.INPUT else self.output
        return tuple(r for r in rails if r.in_force and (lane is None or r.lane is lane))

    @property
    def missing(self) -> tuple[PlannedRail, ...]:
        return tuple(r for r in self.input + self.output if not r.in_force)

    @property
    def checks_anything(self) -> bool:
        return bool(self.rails(Stage.INPUT) or self.rails(Stage.OUTPUT))

    @property
    def is_off(self) -> bool:
        return self.profile.manifest.strictness is Strictness.OFF and not self.checks_anything


def checked_by(models: ModelSet) -> str:
    """Who runs the rails that use the safety role, in words for a sentence."""
    if models.safety is None:
        return ""
    if models.self_check:
        name = f", {models.safety_name}," if models.safety_name else ""
        return f"self-check by the chat model{name} in place of a safety model"
    return f"checked by {models.safety_name}" if models.safety_name else ""


def _plan(flow: ConfiguredFlow, models: ModelSet) -> PlannedRail:
    direct = flow.library is not None and flow.library.spec.model_free
    by = checked_by(models) if SAFETY_ROLE in flow.roles else ""
    return PlannedRail(flow, Lane.DIRECT if direct else Lane.NEMO, flow.roles - models.roles, by)


def plan_profile(profile: Profile, models: ModelSet) -> ProfilePlan:
    return ProfilePlan(
        profile,
        models,
        tuple(_plan(f, models) for f in profile.input_flows),
        tuple(_plan(f, models) for f in profile.output_flows),
    )
