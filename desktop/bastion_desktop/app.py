"""What every entry point sets up before doing anything: the private environment,
the folders, logging, settings and the model registry."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from bastion_desktop.core.inference.types import LoadOptions, SamplingParams
from bastion_desktop.core.logs import configure_logging
from bastion_desktop.core.paths import AppPaths
from bastion_desktop.core.privacy import apply_private_environment
from bastion_desktop.core.registry import ModelRegistry
from bastion_desktop.core.settings import Settings, load_settings
from bastion_desktop.core.starter import STARTER_ID, ensure_starter_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AppContext:
    paths: AppPaths
    settings: Settings
    registry: ModelRegistry

    @classmethod
    def start(cls) -> AppContext:
        apply_private_environment()
        paths = AppPaths.discover()
        paths.ensure()
        configure_logging(paths.log_file)
        settings = load_settings(paths.settings_file)
        return cls(paths, settings, ModelRegistry(paths.registry_file))

    @property
    def models_dir(self) -> Path:
        return self.settings.models_dir or self.paths.models

    def ensure_starter(self) -> None:
        ensure_starter_model(self.models_dir, self.registry)

    def resolve_model(self, reference: str | None) -> tuple[str, Path]:
        """The model to chat with: the one named, else the default, else the starter."""
        chosen = reference or self.settings.default_model or STARTER_ID
        if chosen == STARTER_ID:
            self.ensure_starter()
        return self.registry.resolve(chosen)

    def load_options(self) -> LoadOptions:
        inference = self.settings.inference
        return LoadOptions(inference.context_length, inference.gpu_layers, inference.threads)

    def sampling(self) -> SamplingParams:
        s = self.settings.sampling
        return SamplingParams(
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            min_p=s.min_p,
            repeat_penalty=s.repeat_penalty,
            seed=s.seed,
            max_tokens=s.max_tokens,
        )
