"""What a GGUF file's name says: its quantization, and whether it is one part of a
split model (`name-00001-of-00003.gguf`, the llama.cpp `gguf-split` convention)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

# Quantization labels as llama.cpp and the big uploaders write them in file names
# (Q4_K_M, IQ4_XS, Q8_0, F16, BF16, MXFP4, Unsloth's Q4_K_XL ...), case-insensitive,
# standing between separators. "Qwen3" does not match: a digit must follow the Q.
_QUANT = re.compile(
    r"(?<![A-Z0-9])(I?Q[1-8](?:_[0-9A-Z]{1,3}){0,3}|BF16|F16|F32|MXFP4|TQ[12]_0)(?![A-Z0-9])"
)
_SPLIT = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)


@dataclass(frozen=True)
class SplitPart:
    stem: str
    index: int  # 1-based
    count: int


def is_gguf(path: str) -> bool:
    return path.lower().endswith(".gguf")


def is_projector(path: str) -> bool:
    """Multimodal projector files (`mmproj-*.gguf`) ride along in vision repos; they are
    not models one can chat with."""
    return "mmproj" in PurePosixPath(path).name.lower()


def split_part(path: str) -> SplitPart | None:
    match = _SPLIT.match(PurePosixPath(path).name)
    if match is None:
        return None
    index, count = int(match["index"]), int(match["count"])
    if not 1 <= index <= count:
        return None
    return SplitPart(match["stem"], index, count)


def split_part_name(stem: str, index: int, count: int) -> str:
    return f"{stem}-{index:05d}-of-{count:05d}.gguf"


def quantization_from_name(path: str) -> str | None:
    name = PurePosixPath(path).name
    stem = name[: -len(".gguf")] if is_gguf(name) else name
    part = split_part(name)
    if part is not None:
        stem = part.stem
    found = _QUANT.findall(stem.upper().replace(".", "-"))
    # The last label wins: "Llama-3-8B-Q8_0-Q4_K_M" style names put the real one last.
    return found[-1] if found else None


def model_stem(path: str) -> str:
    """The file name without `.gguf` and without a split suffix."""
    name = PurePosixPath(path).name
    part = split_part(name)
    if part is not None:
        return part.stem
    return name[: -len(".gguf")] if is_gguf(name) else name


def slug(text: str) -> str:
    """A model id made from a name: lower case, letters, digits, dots, dashes, underscores."""
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.")
    return cleaned or "model"


def format_size(size: int | float | None) -> str:
    if size is None:
        return "unknown"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"  # pragma: no cover - the loop always returns


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"
