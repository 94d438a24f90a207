"""Bastion's guardrail layer: profiles, decisions and the engine that applies them.

    engine.GuardEngine      one runtime per profile and model set (NeMo Guardrails)
    runtime                 the protocol ChatService uses, and the Off profile
    decisions               what a check decided, as plain data
    library, profile        profiles as data: built-ins, validation, import, export
    registry, detectors     the fixed registry of rails and their model-free detectors
    explain                 the sentences a user reads, and ProfileStatus
    models                  the model roles rails may use (the safety model)

No Qt and no import of the desktop app: the boundary is checked by import-linter.
NeMo Guardrails is imported lazily, by the code that needs it.
"""

import os

# NeMo Guardrails reads these once, at import time, and reports usage to NVIDIA
# unless told not to. Every entry point sets them too; this guards direct imports.
os.environ["NEMO_GUARDRAILS_NO_USAGE_STATS"] = "1"
os.environ["DO_NOT_TRACK"] = "1"
