"""What GGUF file names say: quantization and split parts."""

from __future__ import annotations

import pytest

from bastion_desktop.core.hub.filenames import (
    format_duration,
    format_size,
    is_projector,
    model_stem,
    quantization_from_name,
    slug,
    split_part,
)


@pytest.mark.parametrize(
    ("name", "quantization"),
    [
        ("Llama-3.2-1B-Instruct-Q4_K_M.gguf", "Q4_K_M"),
        ("qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf", "Q4_K_M"),
        ("Qwen3-8B-Q8_0.gguf", "Q8_0"),
        ("Qwen3-8B-BF16.gguf", "BF16"),
        ("Phi-3.5-mini-instruct-IQ4_XS.gguf", "IQ4_XS"),
        ("gemma-3-4b-it-UD-Q4_K_XL.gguf", "Q4_K_XL"),
        ("Mistral-7B-Instruct-v0.3.f16.gguf", "F16"),
        ("gpt-oss-20b-MXFP4.gguf", "MXFP4"),
        ("subdir/phi-4-Q6_K_L.gguf", "Q6_K_L"),
        ("Qwen3-4B.gguf", None),
        ("model.gguf", None),
    ],
)
def test_quantization_from_the_file_name(name: str, quantization: str | None) -> None:
    assert quantization_from_name(name) == quantization


def test_split_parts_are_recognised() -> None:
    part = split_part("big/Model-Q4_K_M-00002-of-00003.gguf")
    assert part is not None
    assert (part.stem, part.index, part.count) == ("Model-Q4_K_M", 2, 3)
    assert split_part("Model-Q4_K_M.gguf") is None
    assert split_part("Model-00004-of-00003.gguf") is None, "a part past the count is not one"
    assert model_stem("big/Model-Q4_K_M-00002-of-00003.gguf") == "Model-Q4_K_M"


def test_projectors_ids_and_units() -> None:
    assert is_projector("mmproj-gemma-3-4b-f16.gguf")
    assert not is_projector("gemma-3-4b-it-Q4_K_M.gguf")
    assert slug("Llama 3.2 1B / Instruct (Q4_K_M)") == "llama-3.2-1b-instruct-q4_k_m"
    assert format_size(808_000_000) == "808.0 MB"
    assert format_size(4_920_000_000) == "4.9 GB"
    assert format_duration(3725) == "1 h 02 min"
    assert format_duration(None) == "unknown"
