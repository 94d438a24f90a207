"""What a request's JSON asks of the sampler, over the user's settings: the names
OpenAI's clients send, and the llama.cpp ones that Open WebUI and others add."""

from __future__ import annotations

import pytest

from bastion_desktop.api.protocol import ApiError, sampling_from
from bastion_desktop.core.inference.types import SamplingParams

SETTINGS = SamplingParams(seed=42, top_k=40, min_p=0.05, repeat_penalty=1.1)


def test_llama_cpp_samplers_are_honoured_not_dropped() -> None:
    asked = sampling_from({"top_k": 20, "min_p": 0.1, "repeat_penalty": 1.3}, SETTINGS)
    assert (asked.top_k, asked.min_p, asked.repeat_penalty) == (20, 0.1, 1.3)
    assert sampling_from({}, SETTINGS) == SETTINGS
    with pytest.raises(ApiError, match="top_k must be a whole number"):
        sampling_from({"top_k": 2.5}, SETTINGS)


def test_seed_minus_one_is_random_as_in_llama_cpp() -> None:
    assert sampling_from({"seed": -1}, SETTINGS).seed is None
    assert sampling_from({"seed": 7}, SETTINGS).seed == 7
    with pytest.raises(ApiError, match="seed must be from 0"):
        sampling_from({"seed": -2}, SETTINGS)


def test_an_empty_stop_stops_nothing() -> None:
    assert sampling_from({"stop": ""}, SETTINGS).stop == ()
    assert sampling_from({"stop": ["", "\n\n"]}, SETTINGS).stop == ("\n\n",)
    with pytest.raises(ApiError, match="stop must be a string or a list of strings"):
        sampling_from({"stop": [1]}, SETTINGS)
