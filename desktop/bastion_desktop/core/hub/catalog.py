"""The curated catalog: instruct models known to work with llama.cpp, and guard models
for the safety role. It is package data (`bastion_desktop/resources/catalog.toml`),
found through importlib.resources so that it works from a wheel and a frozen build."""

from __future__ import annotations

import functools
import tomllib
from importlib import resources
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bastion_desktop.core.errors import BastionError
from bastion_desktop.core.hub.filenames import format_size, is_gguf

CATALOG_VERSION = 1
ModelRole = Literal["chat", "safety"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelShapeFacts(_Frozen):
    """What sizes the KV cache: layers, KV heads and the size of one head."""

    layers: int = Field(ge=1, le=1000)
    kv_heads: int = Field(ge=1, le=1000)
    head_dim: int = Field(ge=1, le=4096)


class CatalogFile(_Frozen):
    quantization: str = Field(min_length=2)
    file: str
    size: int = Field(gt=0, description="Approximate size in bytes; the Hub's is checked.")

    @model_validator(mode="after")
    def _gguf(self) -> CatalogFile:
        if not is_gguf(self.file):
            raise ValueError(f"{self.file} is not a .gguf file")
        return self


class CatalogModel(_Frozen):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    name: str
    family: str
    role: ModelRole
    repo: str = Field(pattern=r"^[\w.-]+/[\w.-]+$")
    parameters_b: float = Field(gt=0, description="Billions of parameters, rounded.")
    context_length: int = Field(ge=512)
    license: str
    recommended: str
    description: str = Field(min_length=10, max_length=200)
    shape: ModelShapeFacts
    files: tuple[CatalogFile, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _recommended_is_listed(self) -> CatalogModel:
        if self.recommended not in {f.quantization for f in self.files}:
            raise ValueError(f"{self.id}: recommended {self.recommended} is not among its files")
        return self

    def file_for(self, quantization: str | None = None) -> CatalogFile:
        wanted = (quantization or self.recommended).upper()
        for entry in self.files:
            if entry.quantization.upper() == wanted:
                return entry
        listed = ", ".join(f.quantization for f in self.files)
        raise CatalogError(f"{self.name} has no {wanted} file in the catalog (it has {listed}).")


class Catalog(_Frozen):
    version: int
    models: tuple[CatalogModel, ...]

    @model_validator(mode="after")
    def _unique_ids(self) -> Catalog:
        ids = [m.id for m in self.models]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate catalog ids: {', '.join(duplicates)}")
        return self

    def get(self, model_id: str) -> CatalogModel | None:
        return next((m for m in self.models if m.id == model_id), None)

    def for_repo(self, repo: str) -> CatalogModel | None:
        return next((m for m in self.models if m.repo.lower() == repo.lower()), None)

    def by_role(self, role: ModelRole) -> list[CatalogModel]:
        return [m for m in self.models if m.role == role]


class CatalogError(BastionError):
    """The built-in catalog is unreadable (a packaging bug) or lacks what was asked."""


def parse_catalog(text: str) -> Catalog:
    try:
        raw = tomllib.loads(text)
        catalog = Catalog.model_validate(raw)
    except (tomllib.TOMLDecodeError, ValidationError) as error:
        raise CatalogError(
            f"The built-in model catalog is damaged ({error}); reinstall Bastion."
        ) from error
    if catalog.version > CATALOG_VERSION:
        raise CatalogError("The built-in model catalog is newer than this Bastion; reinstall.")
    return catalog


@functools.cache
def load_catalog() -> Catalog:
    """The catalog shipped with Bastion (read once per process)."""
    source = resources.files("bastion_desktop").joinpath("resources", "catalog.toml")
    return parse_catalog(source.read_text(encoding="utf-8"))


def format_catalog_rows(catalog: Catalog, role: ModelRole | None = None) -> list[str]:
    """Plain-text lines for `bastion models catalog`: one per model, recommended file."""
    models = [m for m in catalog.models if role is None or m.role == role]
    if not models:
        return []
    width = max(len(m.id) for m in models)
    rows = []
    for model in models:
        file = model.file_for()
        rows.append(
            f"{model.id:<{width}}  {model.role:<6}  {model.parameters_b:>5.1f}B  "
            f"{file.quantization:<7} ~{format_size(file.size):>8}  {model.license}"
        )
    return rows
