"""The user's settings: a typed, versioned model stored as JSON in the config folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bastion_desktop.core.errors import SettingsError
from bastion_desktop.core.files import write_atomically

SETTINGS_VERSION = 1

GpuLayersSetting = Literal["auto", "none"] | Annotated[int, Field(ge=0, le=1000)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class InferenceSettings(_Section):
    context_length: int = Field(
        4096, ge=256, le=1_048_576, title="Context length", description="Tokens the model sees."
    )
    gpu_layers: GpuLayersSetting = Field(
        "auto",
        title="GPU offload",
        description='"auto" offloads what fits, "none" keeps the model on the CPU, a number '
        "offloads that many layers.",
    )
    threads: int | None = Field(
        None, ge=1, le=512, title="CPU threads", description="Empty means one per physical core."
    )
    device: str = Field(
        "auto",
        min_length=1,
        max_length=200,
        title="Compute device",
        description='"auto" uses the best GPU found, "cpu" only the CPU; a GPU\'s name (as '
        "bastion doctor lists it) uses that GPU alone.",
    )
    cpu_compatibility: bool = Field(
        False,
        title="CPU compatibility mode",
        description="Run llama.cpp's baseline build, which every x86-64 processor runs, "
        "instead of the fastest one this processor supports.",
    )
    unload_after_minutes: int = Field(
        30,
        ge=0,
        le=10_080,
        title="Unload idle models",
        description="Minutes a loaded model may go unused before its memory (RAM and the "
        "GPU's) is given back; the next message loads it again. 0 keeps models loaded.",
    )


class SamplingSettings(_Section):
    temperature: float = Field(0.7, ge=0.0, le=5.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    top_k: int = Field(40, ge=0, le=10_000)
    min_p: float = Field(0.05, ge=0.0, le=1.0)
    repeat_penalty: float = Field(1.1, ge=0.0, le=5.0)
    max_tokens: int = Field(512, ge=1, le=1_048_576)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)


# Free of the ports other local-model servers use (LM Studio 1234, Ollama 11434, Jan
# 1337, GPT4All 4891, llama-server 8080, llama-cpp-python 8000), so both can run.
DEFAULT_API_PORT = 8397


class ApiSettings(_Section):
    enabled: bool = Field(
        False,
        title="Local API",
        description="Serve the OpenAI-compatible API on 127.0.0.1 while Bastion runs.",
    )
    port: int = Field(DEFAULT_API_PORT, ge=1024, le=65535, title="Port")
    profile: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        title="Guardrail profile for the API",
        description="The profile API requests use unless a client asks for another allowed "
        "one; empty means the chat's profile.",
    )
    allowed_origins: tuple[str, ...] = Field(
        (),
        title="Allowed web origins",
        description="Web pages (scheme://host[:port]) that may call the API, e.g. a browser "
        "extension's origin; empty means none.",
    )


class Settings(_Section):
    version: int = Field(SETTINGS_VERSION, description="Format version of this file.")
    default_model: str | None = Field(
        None, title="Default model", description="Registered model id; empty means the starter."
    )
    models_dir: Path | None = Field(
        None, title="Models folder", description="Where downloaded models are kept."
    )
    system_prompt: str = Field("", max_length=100_000)
    retention_days: int | None = Field(
        None,
        ge=1,
        le=36_500,
        title="Keep conversations for",
        description="Days a conversation is kept after its last message; empty keeps them.",
    )
    guard_profile: str = Field(
        "standard",
        min_length=1,
        max_length=200,
        title="Guardrail profile",
        description="The profile new chats use: a built-in id (off, standard, strict, "
        "workplace) or an imported profile's id.",
    )
    theme: Literal["system", "light", "dark"] = Field(
        "system", title="Theme", description="Light or dark; by default as the system is."
    )
    system_prompt_presets: dict[str, str] = Field(
        default_factory=dict,
        title="System prompt presets",
        description="Named system prompts to start a chat with.",
    )
    inference: InferenceSettings = InferenceSettings()
    sampling: SamplingSettings = SamplingSettings()
    api: ApiSettings = ApiSettings()


def _describe(error: ValidationError, source: Path) -> str:
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "(top level)"
    more = len(error.errors()) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"Settings file {source}: {field}: {first['msg']}{tail}."


def _migrate(raw: dict[str, Any], source: Path) -> dict[str, Any]:
    version = raw.get("version", SETTINGS_VERSION)
    if not isinstance(version, int):
        raise SettingsError(f"Settings file {source}: version: must be a whole number.")
    if version > SETTINGS_VERSION:
        raise SettingsError(
            f"Settings file {source} was written by a newer Bastion (format {version}, this "
            f"version reads up to {SETTINGS_VERSION}). Update Bastion; the file was left as is."
        )
    # Version 1 is the first format; later versions add their steps here, oldest first.
    return raw


def load_settings(path: Path) -> Settings:
    """Read the settings file; a missing file means the defaults."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Settings()
    except (OSError, UnicodeDecodeError) as error:
        raise SettingsError(f"Settings file {path} cannot be read: {error}.") from error
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise SettingsError(
            f"Settings file {path} is not valid JSON: {error.msg} at line {error.lineno}, "
            f"column {error.colno}."
        ) from error
    except RecursionError:
        raise SettingsError(f"Settings file {path} is nested too deeply to be read.") from None
    if not isinstance(raw, dict):
        raise SettingsError(f"Settings file {path} must hold a JSON object.")
    try:
        return Settings.model_validate(_migrate(raw, path))
    except ValidationError as error:
        raise SettingsError(_describe(error, path)) from error


def save_settings(settings: Settings, path: Path) -> None:
    text = settings.model_dump_json(indent=2, exclude_none=False) + "\n"
    write_atomically(path, text.encode("utf-8"))
