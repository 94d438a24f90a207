"""Guard models as safety models: each family's prompt and answer parser, the family
detector, the self-check fallback, and the adapter that runs them on a model reached
through NeMo Guardrails' `LLMModel` protocol.

    llama_guard     Llama Guard 3: the S1-S14 taxonomy, one call, "safe" or "unsafe\\nS1,S10"
    shieldgemma     ShieldGemma: one call per policy, "Yes" or "No"
    self_check      an instruction-tuned chat model judging with Bastion's own prompt
    family          which family a GGUF is, and whether a chat model is instruction-tuned
    adapter         `PromptedSafetyModel`: a `SafetyModel` over an `LLMModel`; verdicts
                    from first-token probabilities where the model can be scored
    calibration     the set a judge must pass, once per model file, and its thresholds

Every verdict fails closed: an answer it cannot read is an unsafe verdict with no
categories, which every profile blocks. The models themselves are run by the desktop
app (a model host per model); this package only builds prompts and reads answers.
"""

from bastion_guardrails.safety.adapter import (
    AnswerScore,
    CheckRecord,
    GuardLLM,
    PromptedSafetyModel,
    ScoringLLM,
    UncalibratedJudgeError,
)
from bastion_guardrails.safety.family import GuardFamily, detect_family, is_instruction_tuned

__all__ = [
    "AnswerScore",
    "CheckRecord",
    "GuardFamily",
    "GuardLLM",
    "PromptedSafetyModel",
    "ScoringLLM",
    "UncalibratedJudgeError",
    "detect_family",
    "is_instruction_tuned",
]
