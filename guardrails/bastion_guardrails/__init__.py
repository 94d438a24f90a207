"""Bastion's guardrail layer: profiles, decisions and the engine that applies them.

No Qt and no import of the desktop app: the boundary is checked by import-linter.
"""

import os

# NeMo Guardrails reads these once, at import time, and reports usage to NVIDIA
# unless told not to. Every entry point sets them too; this guards direct imports.
os.environ["NEMO_GUARDRAILS_NO_USAGE_STATS"] = "1"
os.environ["DO_NOT_TRACK"] = "1"
