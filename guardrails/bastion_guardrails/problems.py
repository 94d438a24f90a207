"""Profile problems a person can fix: each names the file, the field and the line."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ProfileProblem:
    file: str  # path inside the profile, e.g. "config.yml"
    message: str
    field: str | None = None  # dotted, e.g. "rails.output.streaming.chunk_size"
    line: int | None = None  # 1-based

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f", line {self.line}"
        if self.field:
            where += f", field '{self.field}'"
        return f"{where}: {self.message}"


class GuardrailsError(Exception):
    """A problem a person can act on (a missing, broken or unusable profile); its text is
    a sentence for them. The guardrail layer's only user-facing errors derive from it:
    anything else escaping this layer is a bug, and the app treats it as one."""


class ProfileError(GuardrailsError):
    """A profile that cannot be used as it is; `problems` says exactly why."""

    def __init__(self, source: str, problems: Sequence[ProfileProblem]) -> None:
        self.source = source
        self.problems = tuple(problems)
        listed = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"The profile {source} is not valid:\n{listed}")


class ProfileNotFoundError(GuardrailsError, LookupError):
    def __init__(self, profile_id: str) -> None:
        self.profile_id = profile_id
        super().__init__(f"There is no guardrail profile with the id {profile_id!r}.")
