"""Reading this OS's policy channel into the effective policy, without ever raising."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from bastion_desktop.core.policy.effective import EffectivePolicy
from bastion_desktop.core.policy.linux import LinuxPolicyReader
from bastion_desktop.core.policy.macos import MacPolicyReader
from bastion_desktop.core.policy.merge import merge_sources
from bastion_desktop.core.policy.sources import Level, PolicyReader, PolicySource, unusable
from bastion_desktop.core.policy.windows import WindowsPolicyReader

log = logging.getLogger(__name__)


def system_readers() -> list[PolicyReader]:
    """The readers of this OS's real, admin-only policy locations. There is no way to
    point them elsewhere from outside the process: tests replace this function."""
    if sys.platform == "win32":
        return [WindowsPolicyReader()]
    if sys.platform == "darwin":
        return [MacPolicyReader()]
    return [LinuxPolicyReader()]


def read_sources(readers: Sequence[PolicyReader]) -> list[PolicySource]:
    sources: list[PolicySource] = []
    for reader in readers:
        try:
            sources += reader.read()
        except Exception:
            # A bug in a reader must not leave the app unmanaged: fail closed.
            log.exception("policy: %s failed", type(reader).__name__)
            why = "could not be read because of a bug in Bastion (the log has the details)"
            sources.append(unusable(type(reader).__name__, Level.MACHINE_MANDATORY, why))
    return sources


def load_policy(readers: Sequence[PolicyReader] | None = None) -> EffectivePolicy:
    """The effective policy of this machine and user. Never raises for a bad source:
    the problems are recorded, and a bad mandatory source fails closed."""
    sources = read_sources(system_readers() if readers is None else readers)
    try:
        return merge_sources(sources)
    except Exception:
        log.exception("policy: merging failed")
        bug = unusable("the policy", Level.MACHINE_MANDATORY, "could not be merged (a bug)")
        return merge_sources([bug])
