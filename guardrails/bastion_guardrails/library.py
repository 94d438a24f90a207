"""Where profiles come from: the built-in bundles shipped as package data, the user's
imported profiles (a folder per profile), and profiles an administrator provides.
Import and export, for the CLI and the UI."""

from __future__ import annotations

import functools
import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from bastion_guardrails.bundle import (
    IGNORED_NAMES,
    ProfileBundle,
    ProfileOrigin,
    read_bundle,
    read_folder,
    write_zip,
)
from bastion_guardrails.problems import ProfileError, ProfileNotFoundError, ProfileProblem
from bastion_guardrails.profile import Profile, load_profile

log = logging.getLogger(__name__)

BUILTIN_IDS = ("off", "standard", "strict", "workplace")
DEFAULT_PROFILE_ID = "standard"
STRICTEST_BUILTIN_ID = "strict"


def _read_traversable(folder: Traversable, prefix: str = "") -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for entry in folder.iterdir():
        if entry.name in IGNORED_NAMES or entry.name == "__pycache__":
            continue
        if entry.is_dir():
            files.update(_read_traversable(entry, f"{prefix}{entry.name}/"))
        else:
            files[prefix + entry.name] = entry.read_bytes()
    return files


def builtin_bundle(profile_id: str) -> ProfileBundle:
    if profile_id not in BUILTIN_IDS:
        raise ProfileNotFoundError(profile_id)
    folder = resources.files("bastion_guardrails.profiles").joinpath(profile_id)
    return ProfileBundle(
        f"built-in profile '{profile_id}'", ProfileOrigin.BUILTIN, _read_traversable(folder)
    )


@dataclass(frozen=True)
class ProfileEntry:
    """A profile as listed: valid (with its Profile) or broken (with its problems)."""

    id: str
    origin: ProfileOrigin
    profile: Profile | None
    error: ProfileError | None = None


@functools.cache
def _builtin_profile(profile_id: str) -> Profile:
    """A built-in profile, read once per process: they ship with Bastion and never
    change while it runs, and reading one (YAML, Colang, hashing) takes milliseconds
    that every choice of a profile paid again."""
    return load_profile(builtin_bundle(profile_id))


class ProfileLibrary:
    def __init__(self, user_dir: Path | None = None, admin_dirs: Sequence[Path] = ()) -> None:
        self.user_dir = user_dir
        self.admin_dirs = tuple(admin_dirs)
        self._builtin: dict[str, Profile] = {}

    def builtin(self, profile_id: str) -> Profile:
        if profile_id not in self._builtin:
            self._builtin[profile_id] = _builtin_profile(profile_id)
        return self._builtin[profile_id]

    def _folders(self) -> list[tuple[Path, ProfileOrigin]]:
        found = []
        for directory, origin in [
            *((d, ProfileOrigin.ADMIN) for d in self.admin_dirs),
            *([(self.user_dir, ProfileOrigin.USER)] if self.user_dir else []),
        ]:
            if directory.is_dir():
                found += [(p, origin) for p in sorted(directory.iterdir()) if p.is_dir()]
        return found

    def entries(self) -> list[ProfileEntry]:
        entries = [ProfileEntry(i, ProfileOrigin.BUILTIN, self.builtin(i)) for i in BUILTIN_IDS]
        for folder, origin in self._folders():
            try:
                profile = load_profile(read_folder(folder, origin))
            except ProfileError as error:
                entries.append(ProfileEntry(folder.name, origin, None, error))
                continue
            entries.append(ProfileEntry(profile.id, origin, profile))
        return entries

    def get(self, profile_id: str) -> Profile:
        """The profile with this id: built-ins first, then administrator profiles, then
        the user's. A broken profile raises its ProfileError."""
        if profile_id in BUILTIN_IDS:
            return self.builtin(profile_id)
        for folder, origin in self._folders():
            if folder.name == profile_id:
                return load_profile(read_folder(folder, origin))
        raise ProfileNotFoundError(profile_id)


def check_profile(path: Path, origin: ProfileOrigin = ProfileOrigin.USER) -> Profile:
    """Validate a profile folder or zip without installing it (`bastion profiles check`):
    what `import_profile` would refuse, this refuses too."""
    profile = load_profile(read_bundle(path, origin))
    if origin is ProfileOrigin.USER and profile.id in BUILTIN_IDS:
        raise ProfileError(str(path), [_builtin_id(profile.id)])
    return profile


def _builtin_id(profile_id: str) -> ProfileProblem:
    return ProfileProblem(
        "profile.yml",
        f"'{profile_id}' is the id of a built-in profile; choose another id",
        field="id",
    )


def import_profile(source: Path, user_dir: Path, *, replace: bool = False) -> Profile:
    """Validate a profile folder or zip and install it into `user_dir/<id>/`.

    A profile whose id is a built-in's is refused; one whose id is already installed is
    refused unless `replace`. Nothing is written unless the profile is valid.
    """
    profile = load_profile(read_bundle(source, ProfileOrigin.USER))
    if profile.id in BUILTIN_IDS:
        raise ProfileError(str(source), [_builtin_id(profile.id)])
    target = user_dir / profile.id
    if target.exists() and not replace:
        problem = ProfileProblem(
            "profile.yml", f"a profile with the id '{profile.id}' is already installed", "id"
        )
        raise ProfileError(str(source), [problem])
    user_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{profile.id}-", dir=user_dir))
    try:
        for relative, data in profile.bundle.files.items():
            destination = staging / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(data)
        if target.exists():
            old = target.with_name(f".{profile.id}-replaced")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            staging.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("imported guardrail profile %s (%s)", profile.id, profile.content_hash[:12])
    return load_profile(read_folder(target, ProfileOrigin.USER))


def export_profile(profile: Profile, destination: Path) -> Path:
    """Write the profile as a zip (into `destination/<id>.zip` if it is a folder). The
    same profile always gives the same bytes, and importing it gives the same hash."""
    if destination.is_dir():
        destination = destination / f"{profile.id}.zip"
    return write_zip(profile.bundle, destination, top_folder=profile.id)
