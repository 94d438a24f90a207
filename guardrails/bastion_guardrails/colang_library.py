"""Bastion's own Colang rail flows, generated from the registry so that a flow's name,
its action, its mode and its stage can never disagree.

Every flow executes one registry action and acts on NeMo's `RailOutcome`: a BLOCK
stops with a refusal; a TRANSFORM rewrites `$user_message` or `$bot_message`. Profiles
name these flows in `rails.input.flows` and `rails.output.flows` of their config.yml.
"""

from __future__ import annotations

from functools import cache

from bastion_guardrails.decisions import Stage
from bastion_guardrails.rail_actions import LIBRARY_FLOWS, MASK

REFUSAL_INTENT = "bastion refuse"
REFUSAL = "I can't help with that: a guardrail stopped it."


def _variable(stage: Stage) -> str:
    return "user_message" if stage is Stage.INPUT else "bot_message"


@cache
def bastion_colang() -> str:
    blocks = [f'define bot {REFUSAL_INTENT}\n  "{REFUSAL}"\n']
    for flow in LIBRARY_FLOWS.values():
        variable = _variable(flow.stage)
        params = [f'source="{flow.stage.value}"', f"text=${variable}"]
        if flow.spec.model_free:
            params.insert(1, f'mode="{flow.mode}"')
        elif flow.stage is Stage.OUTPUT:
            params.append("user_message=$user_message")
        lines = [
            f"define subflow {flow.name}",
            f"  $bastion_outcome = execute {flow.spec.action}({', '.join(params)})",
            "  if $bastion_outcome.is_blocked",
            f"    bot {REFUSAL_INTENT}",
            "    stop",
        ]
        if flow.mode == MASK:
            lines += [
                "  if $bastion_outcome.is_transform",
                f'    ${variable} = $bastion_outcome.transform_text["{variable}"]',
            ]
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)
