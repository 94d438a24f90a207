"""The process environment that keeps Bastion offline and untracked.

Every entry point calls `apply_private_environment()` before anything imports
huggingface_hub or nemoguardrails: both read these variables once, at import time.
NeMo Guardrails sends usage statistics to NVIDIA unless told not to; the Hub client
reaches the network unless it is put in offline mode. Downloads lift offline mode for
their own call only, never for the process.
"""

import os
from collections.abc import MutableMapping

PRIVATE_ENVIRONMENT: dict[str, str] = {
    "NEMO_GUARDRAILS_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}


def apply_private_environment(environ: MutableMapping[str, str] | None = None) -> None:
    """Force the variables on, overriding whatever the user's shell set."""
    target = os.environ if environ is None else environ
    target.update(PRIVATE_ENVIRONMENT)
