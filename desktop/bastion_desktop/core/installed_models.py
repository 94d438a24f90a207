"""The installed-models registry: which GGUF files Bastion knows, kept as JSON in the
data folder."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bastion_desktop.core.errors import BastionError, ModelNotFoundError
from bastion_desktop.core.files import write_atomically

# 2 added the optional fields below `description` (version 1 files read as they are).
REGISTRY_VERSION = 2


class ModelPart(BaseModel):
    """One file of a split model (`name-00001-of-00003.gguf` ...)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str  # its name in the Hub repository
    path: Path
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class RegisteredModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    name: str
    path: Path
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    source: Literal["starter", "local", "hub"]
    role: Literal["chat", "safety"] = "chat"
    repo: str | None = None
    file: str | None = None
    license: str | None = None
    description: str = ""
    revision: str | None = None  # the Hub commit it was downloaded from
    # Whether Bastion wrote the file (a download, an imported copy) and so may delete it
    # on removal; a file imported in place, or an entry from version 1, is the user's.
    owns_file: bool = False
    # Every part of a split model, the first one being `path`; empty for a single file.
    parts: tuple[ModelPart, ...] = ()
    quantization: str | None = None
    architecture: str | None = None
    context_length: int | None = None
    parameters: int | None = None
    has_chat_template: bool | None = None

    @property
    def files(self) -> tuple[Path, ...]:
        return tuple(p.path for p in self.parts) if self.parts else (self.path,)


class _RegistryFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = REGISTRY_VERSION
    models: list[RegisteredModel] = []


class RegistryError(BastionError):
    """The registry file is damaged."""


_LOCKS: dict[Path, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


def _lock_for(file: Path) -> threading.RLock:
    """One lock per registry file, shared by every ModelRegistry of this process."""
    key = file.absolute()
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.RLock())


class ModelRegistry:
    """The installed models, in one JSON file. Safe to use from any thread: changes are
    read-modify-writes under one lock per file, and reads are served from the last
    parse for as long as the file is unchanged (another process's write is seen: it
    replaces the file)."""

    def __init__(self, file: Path) -> None:
        self.file = file
        self._lock = _lock_for(file)
        self._cached: tuple[tuple[int, int, int], _RegistryFile] | None = None

    def _read(self) -> _RegistryFile:
        """The file's content (a copy the caller may change)."""
        with self._lock:
            try:
                stat = self.file.stat()
            except FileNotFoundError:
                return _RegistryFile()
            except OSError:
                stat = None
            key = (stat.st_ino, stat.st_mtime_ns, stat.st_size) if stat else None
            if key is not None and self._cached is not None and self._cached[0] == key:
                return self._cached[1].model_copy(deep=True)
            content = self._parse()
            if key is not None:
                self._cached = (key, content.model_copy(deep=True))
            return content

    def _parse(self) -> _RegistryFile:
        try:
            raw = json.loads(self.file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return _RegistryFile()
        except (OSError, ValueError) as error:
            raise RegistryError(
                f"The model list {self.file} cannot be read ({error}). Move it aside and "
                "Bastion will start a new one; your model files are not affected."
            ) from error
        newer = isinstance(raw, dict) and isinstance(raw.get("version"), int)
        if newer and raw["version"] > REGISTRY_VERSION:
            raise RegistryError(
                f"The model list {self.file} was written by a newer Bastion; update Bastion."
            )
        try:
            return _RegistryFile.model_validate(raw)
        except ValidationError as error:
            raise RegistryError(
                f"The model list {self.file} is damaged ({error.errors()[0]['msg']}). Move it "
                "aside and Bastion will start a new one; your model files are not affected."
            ) from error

    def list(self) -> list[RegisteredModel]:
        return list(self._read().models)

    def get(self, model_id: str) -> RegisteredModel | None:
        return next((m for m in self._read().models if m.id == model_id), None)

    def add(self, model: RegisteredModel) -> None:
        with self._lock:
            content = self._read()
            content.models = [m for m in content.models if m.id != model.id] + [model]
            self._write(content)

    def remove(self, model_id: str) -> RegisteredModel:
        with self._lock:
            content = self._read()
            found = next((m for m in content.models if m.id == model_id), None)
            if found is None:
                raise ModelNotFoundError(f"No installed model has the id {model_id!r}.")
            content.models = [m for m in content.models if m.id != model_id]
            self._write(content)
            return found

    def _write(self, content: _RegistryFile) -> None:
        content.version = REGISTRY_VERSION
        write_atomically(self.file, (content.model_dump_json(indent=2) + "\n").encode())
        self._cached = None  # the next read parses what was written

    def resolve(self, reference: str) -> tuple[str, Path]:
        """A registered id, or a path to a GGUF file; returns (id, path)."""
        model = self.get(reference)
        if model is not None:
            if not model.path.is_file():
                raise ModelNotFoundError(
                    f"The file of model {model.id!r} is missing ({model.path}). Download or "
                    "import it again."
                )
            return model.id, model.path
        path = Path(reference).expanduser()
        if path.exists():
            return str(path.resolve()), path.resolve()
        known = ", ".join(m.id for m in self.list()) or "none"
        raise ModelNotFoundError(
            f"No model {reference!r}: it is neither an installed model id (installed: {known}) "
            "nor a file."
        )
