"""Administrator policy: GPO/registry on Windows, MDM preferences on macOS, files in
/etc on Linux, read into one `EffectivePolicy`.

    schema      every policy, declared once
    sources     what readers produce: values per source, with a level and problems
    linux, windows, macos   the per-OS readers (OS calls behind injectable backends)
    merge       precedence, validation, the locked profile, failing closed
    effective   EffectivePolicy: values, locks, profile choice, allowed models
    loading     load_policy(): this OS's readers, never raising
    templates   ADMX/ADML, .mobileconfig, sample JSON and JSON Schema from the schema
    check       validating a policy JSON file before it is deployed

Policy locks the application against its user, not against a local administrator or
someone who runs their own code (docs/admin-guide.md).
"""

from bastion_desktop.core.policy.effective import (
    BANNER,
    EffectivePolicy,
    LockedProfile,
    PolicyEntry,
    PolicyRefusedError,
    ProfileChoice,
)
from bastion_desktop.core.policy.loading import load_policy
from bastion_desktop.core.policy.sources import Level, PolicyProblem, PolicySource

__all__ = [
    "BANNER",
    "EffectivePolicy",
    "Level",
    "LockedProfile",
    "PolicyEntry",
    "PolicyProblem",
    "PolicyRefusedError",
    "PolicySource",
    "ProfileChoice",
    "load_policy",
]
