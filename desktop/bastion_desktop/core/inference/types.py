"""Plain data exchanged with model hosts (picklable: it crosses the process boundary)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Literal

from bastion_desktop.core.inference.backends import RuntimeInfo

GpuLayers = Literal["auto", "none"] | int


class Role(StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True)
class LoadOptions:
    context_length: int = 4096
    gpu_layers: GpuLayers = "auto"
    threads: int | None = None
    # "auto", "cpu", or a GPU's name as llama.cpp describes it (see runtime_probe).
    device: str = "auto"
    # Pin the baseline CPU variant instead of the best this CPU runs.
    cpu_compatibility: bool = False


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    seed: int | None = None
    max_tokens: int = 512
    stop: tuple[str, ...] = ()
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    # Constrained output (the local API's response_format): "json" for any JSON value,
    # or a JSON Schema's text; llama.cpp's grammar sampler enforces it token by token.
    output_format: str | None = None
    # The last message is a plain prompt to continue (the local API's /v1/completions):
    # no chat template, no history, and its own special tokens (e.g. fill-in-the-middle
    # marks) are read as such.
    raw_prompt: bool = False


@dataclass(frozen=True)
class ModelFacts:
    """What a loaded model is and how it runs on this machine."""

    path: Path
    architecture: str
    parameters: int
    size_label: str
    quantization: str
    context_length: int
    trained_context_length: int
    layers: int
    chat_template: str
    chat_template_source: str
    gpu_offload_supported: bool
    gpu_layers: int
    file_size: int
    threads: int
    gpu_note: str = ""  # set when GPU memory ran short and fewer layers were offloaded
    # What llama.cpp runs on in the model's host: backends, CPU variant, devices.
    runtime: RuntimeInfo | None = None
    # One sentence: which device runs the model and why ("Runs on the CPU: no GPU was
    # found.", "Runs on NVIDIA GeForce RTX 4060 (Vulkan).").
    placement: str = ""
    # Whether a chat should tell it (a GPU in use, or the CPU for a reason worth knowing).
    placement_worth_telling: bool = False


FinishReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True)
class GenerationStats:
    prompt_tokens: int
    generated_tokens: int
    ttft_ms: float
    tokens_per_second: float
    total_ms: float
    finish_reason: FinishReason
    # How this reply was made, for diagnosis (benchmarks/bench_gpu.py); the history does
    # not keep them, and a reply read back equals the one streamed. The best tokens the
    # GPU kept for the sampler (llama.cpp's backend top-k), 0 when the sampler chose from
    # every token's logit; tokens_per_second as the model host produced the text, before
    # the pipe and the app; the prompt tokens the model read (the rest were in its cache)
    # and the time it took, without the template, the tokenizer, the pipe or a sample.
    gpu_top_k: int = field(default=0, compare=False)
    host_tokens_per_second: float = field(default=0.0, compare=False)
    prompt_tokens_read: int = field(default=0, compare=False)
    prompt_read_ms: float = field(default=0.0, compare=False)


@dataclass(frozen=True)
class PromptTrimmed:
    """Old turns were left out so the conversation fits the context window."""

    dropped_messages: int
    prompt_tokens: int
    context_length: int


@dataclass(frozen=True)
class TokenText:
    text: str


@dataclass(frozen=True)
class GenerationFinished:
    stats: GenerationStats
    text: str = field(repr=False)


HostEvent = PromptTrimmed | TokenText | GenerationFinished
