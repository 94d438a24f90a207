"""A profile's files as read from a folder or a zip archive, and its content hash.

A bundle holds the bytes it was validated from: the engine loads NeMo from these
bytes, never from the folder again, so what runs is what was checked and hashed.

The content hash is sha256 over a canonical form: the files sorted by their path
inside the profile, each framed by its path and length, with text files' line endings
normalised to LF and a UTF-8 byte-order mark dropped. A folder and a zip of it, on
Windows or Linux, hash the same; changing any byte of any file changes the hash.
"""

from __future__ import annotations

import hashlib
import stat
import zipfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath

from bastion_guardrails.problems import ProfileError, ProfileProblem

HASH_PREFIX = b"bastion-profile-v1\0"
TEXT_SUFFIXES = frozenset({".yml", ".yaml", ".co", ".md", ".txt", ".py"})
CODE_SUFFIXES = frozenset({".py", ".pyc", ".pyd", ".so", ".dll", ".dylib"})
MAX_FILES = 200
MAX_FILE_BYTES = 1_000_000
MAX_TOTAL_BYTES = 5_000_000
# Written into exported archives so that the same profile always zips to the same bytes.
ZIP_TIMESTAMP = (2020, 1, 1, 0, 0, 0)
IGNORED_NAMES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})


class ProfileOrigin(StrEnum):
    BUILTIN = "builtin"  # shipped inside Bastion: may carry code
    USER = "user"  # imported by the user: data only
    ADMIN = "admin"  # pushed by an administrator's policy: data only


@dataclass(frozen=True)
class ProfileBundle:
    source: str  # where it came from, for messages
    origin: ProfileOrigin
    files: dict[str, bytes]  # POSIX path inside the profile -> content

    @property
    def content_hash(self) -> str:
        return content_hash(self.files)

    def text(self, path: str) -> str:
        """A file as text (UTF-8); a file that is not raises ProfileError."""
        try:
            return _canonical(path, self.files[path]).decode("utf-8")
        except UnicodeDecodeError:
            problem = ProfileProblem(path, "is not UTF-8 text")
            raise ProfileError(self.source, [problem]) from None


def _canonical(path: str, data: bytes) -> bytes:
    if PurePosixPath(path).suffix.lower() in TEXT_SUFFIXES:
        data = data.removeprefix(b"\xef\xbb\xbf").replace(b"\r\n", b"\n")
    return data


def content_hash(files: dict[str, bytes]) -> str:
    digest = hashlib.sha256(HASH_PREFIX)
    for path in sorted(files):
        data = _canonical(path, files[path])
        name = path.encode("utf-8")
        digest.update(len(name).to_bytes(4, "big") + name)
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


def _check_limits(source: str, files: dict[str, bytes]) -> None:
    problems = []
    if len(files) > MAX_FILES:
        problems.append(ProfileProblem("(profile)", f"has {len(files)} files; at most {MAX_FILES}"))
    for path, data in files.items():
        if len(data) > MAX_FILE_BYTES:
            problems.append(ProfileProblem(path, f"is larger than {MAX_FILE_BYTES:,} bytes"))
    if sum(len(d) for d in files.values()) > MAX_TOTAL_BYTES:
        problems.append(ProfileProblem("(profile)", f"is larger than {MAX_TOTAL_BYTES:,} bytes"))
    if problems:
        raise ProfileError(source, problems)


def read_folder(folder: Path, origin: ProfileOrigin) -> ProfileBundle:
    source = str(folder)
    if not folder.is_dir():
        raise ProfileError(source, [ProfileProblem("(profile)", "is not a folder")])
    files: dict[str, bytes] = {}
    problems = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if path.is_symlink():
            message = "is a symbolic link; profiles hold plain files"
            problems.append(ProfileProblem(relative, message))
            continue
        if path.is_dir() or path.name in IGNORED_NAMES or "__pycache__" in path.parts:
            continue
        files[relative] = path.read_bytes()
        if len(files) > MAX_FILES:
            break
    if problems:
        raise ProfileError(source, problems)
    _check_limits(source, files)
    return ProfileBundle(source, origin, files)


def read_zip(archive: Path, origin: ProfileOrigin) -> ProfileBundle:
    """A profile from a zip of its folder (or of its files). Paths that leave the
    archive, links and oversized members are refused before anything is extracted."""
    source = str(archive)
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = [m for m in zipped.infolist() if not m.is_dir()]
            problems = []
            total = 0
            for member in members:
                name = PurePosixPath(member.filename)
                if name.is_absolute() or ".." in name.parts or "\\" in member.filename:
                    problems.append(ProfileProblem(member.filename, "has an unsafe path"))
                if stat.S_ISLNK(member.external_attr >> 16):
                    problems.append(ProfileProblem(member.filename, "is a symbolic link"))
                total += member.file_size
            if len(members) > MAX_FILES or total > MAX_TOTAL_BYTES:
                problems.append(ProfileProblem("(profile)", "is too large"))
            if problems:
                raise ProfileError(source, problems)
            names = [PurePosixPath(m.filename) for m in members]
            # A zip of the folder has one top folder around everything: drop it.
            tops = {n.parts[0] for n in names if len(n.parts) > 1}
            strip = len(tops) == 1 and all(len(n.parts) > 1 for n in names)
            files: dict[str, bytes] = {}
            for member, name in zip(members, names, strict=True):
                relative = PurePosixPath(*name.parts[1:]) if strip else name
                if name.name in IGNORED_NAMES or "__MACOSX" in name.parts:
                    continue
                files[relative.as_posix()] = zipped.read(member)
    except (zipfile.BadZipFile, OSError) as error:
        problem = ProfileProblem("(profile)", f"is not a readable zip archive ({error})")
        raise ProfileError(source, [problem]) from None
    _check_limits(source, files)
    return ProfileBundle(source, origin, files)


def read_bundle(path: Path, origin: ProfileOrigin) -> ProfileBundle:
    if path.is_file() and zipfile.is_zipfile(path):
        return read_zip(path, origin)
    if path.is_file():
        why = (
            "is a zip archive that is damaged or cut short"
            if _zip_named(path)
            else ("is neither a profile folder nor a zip archive of one")
        )
        raise ProfileError(str(path), [ProfileProblem("(profile)", why)])
    if not path.exists():
        raise ProfileError(str(path), [ProfileProblem("(profile)", "does not exist")])
    return read_folder(path, origin)


def _zip_named(path: Path) -> bool:
    if path.suffix.lower() == ".zip":
        return True
    try:
        with path.open("rb") as head:
            return head.read(2) == b"PK"
    except OSError:
        return False


def write_zip(bundle: ProfileBundle, destination: Path, top_folder: str) -> Path:
    """An archive of the bundle with fixed timestamps and order: the same profile always
    gives the same bytes."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as zipped:
        for path in sorted(bundle.files):
            info = zipfile.ZipInfo(f"{top_folder}/{path}", date_time=ZIP_TIMESTAMP)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zipped.writestr(info, bundle.files[path])
    partial.replace(destination)
    return destination


def is_code(path: str) -> bool:
    pure = PurePosixPath(path)
    return pure.suffix.lower() in CODE_SUFFIXES or "actions" in pure.parts[:-1]
