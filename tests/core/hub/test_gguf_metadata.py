"""The lean GGUF reader agrees with the gguf package, is fast on big vocabularies, and
turns damaged files into sentences."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest

from bastion_desktop.core.hub.errors import GgufFormatError
from bastion_desktop.core.hub.gguf_metadata import (
    GGML_BLOCKS,
    SkippedArray,
    read_gguf_file,
    read_gguf_metadata,
    require_whole,
    why_incomplete,
)
from tests.core.hub.gguf_files import write_tiny_gguf


def test_it_reads_what_the_gguf_package_reads(tiny_gguf: Path) -> None:
    import gguf

    reference = gguf.GGUFReader(tiny_gguf)
    ours = read_gguf_file(tiny_gguf)
    for name, field in reference.fields.items():
        if name.startswith("GGUF."):
            continue
        value = ours.values[name]
        if isinstance(value, SkippedArray):
            assert value.length == len(field.data), name
        else:
            assert value == field.contents(), name
    start = ours.data_offset
    assert [(t.name, t.shape, t.ggml_type, t.offset) for t in ours.tensors] == [
        (t.name, tuple(map(int, t.shape)), int(t.tensor_type), int(t.data_offset) - start)
        for t in reference.tensors
    ]
    assert [t.nbytes for t in ours.tensors][:-1] == [
        -(-int(t.n_bytes) // 32) * 32 for t in reference.tensors
    ][:-1], "each tensor's bytes run to the next aligned tensor"


def test_the_model_facts(tiny_gguf: Path) -> None:
    meta = read_gguf_metadata(tiny_gguf)
    assert (meta.architecture, meta.name, meta.quantization) == ("llama", "Tiny Test", "Q4_K_M")
    assert (meta.context_length, meta.block_count, meta.vocabulary_size) == (2048, 2, 32)
    assert meta.has_chat_template
    assert meta.parameters == 32 * 64 * 2 + 2 * (64 * 64 + 32 * 64)
    assert not read_gguf_metadata(
        write_tiny_gguf(tiny_gguf.with_name("plain.gguf"), chat_template=None)[0]
    ).has_chat_template


def test_the_starter_is_read_in_a_blink(starter_path: Path) -> None:
    started = time.perf_counter()
    meta = read_gguf_metadata(starter_path)
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0, f"{elapsed:.2f}s: the vocabulary must be stepped over, not parsed"
    assert (meta.architecture, meta.quantization, meta.block_count) == ("gemma3", "Q4_K_M", 18)
    assert (meta.context_length, meta.vocabulary_size) == (32768, 262144)
    assert not meta.has_chat_template, "the starter is a base model without a template"
    assert 260e6 < meta.parameters < 280e6


def test_a_split_model_is_read_as_one(tmp_path: Path) -> None:
    parts = write_tiny_gguf(tmp_path / "Split-Q8_0.gguf", layers=4, split_max_tensors=3)
    assert len(parts) == 4
    whole = write_tiny_gguf(tmp_path / "Whole-Q8_0.gguf", layers=4)[0]
    meta = read_gguf_metadata(parts[2])
    assert meta.paths == tuple(parts)
    assert meta.block_count == 4
    assert meta.parameters == read_gguf_metadata(whole).parameters
    assert meta.file_size == sum(p.stat().st_size for p in parts)
    parts[3].unlink()
    with pytest.raises(GgufFormatError, match=r"one part of a split model, but .*00004-of-00004"):
        read_gguf_metadata(parts[0])


def test_damaged_files_are_sentences(tiny_gguf: Path, tmp_path: Path) -> None:
    data = tiny_gguf.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[:200])
    with pytest.raises(GgufFormatError, match="cut short or damaged"):
        read_gguf_file(cut)
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_bytes(b"NOPE" + data[4:])
    with pytest.raises(GgufFormatError, match="not a GGUF model file"):
        read_gguf_file(not_gguf)
    liar = tmp_path / "liar.gguf"
    liar.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 2**62, 2**62) + data[24:])
    with pytest.raises(GgufFormatError, match="counts are impossible"):
        read_gguf_file(liar)
    tiny = tmp_path / "tiny.gguf"
    tiny.write_bytes(b"GGUF")
    with pytest.raises(GgufFormatError, match="too small"):
        read_gguf_file(tiny)
    huge_string = tmp_path / "huge-string.gguf"
    huge_string.write_bytes(data[:24] + struct.pack("<Q", 2**60) + data[32:])
    with pytest.raises(GgufFormatError, match="cut short or damaged"):
        read_gguf_file(huge_string)


def test_the_tensor_sizes_are_ggmls() -> None:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    for ggml_type, block in GGML_BLOCKS.items():
        assert GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)] == block, ggml_type


def test_a_file_cut_short_is_incomplete_down_to_its_last_byte(
    starter_path: Path, tmp_path: Path
) -> None:
    data = starter_path.read_bytes()
    whole = read_gguf_file(starter_path)
    require_whole(whole)  # the real starter needs every byte it has
    assert whole.data_offset + whole.data_end == len(data)
    assert why_incomplete(starter_path) is None
    for keep in (100_000_000, len(data) - 1):
        cut = tmp_path / f"cut-{keep}.gguf"
        cut.write_bytes(data[:keep])
        with pytest.raises(GgufFormatError, match=f"is incomplete: it is {keep:,} bytes"):
            require_whole(read_gguf_file(cut))  # the header and tensor table read fine
        assert "get the file again" in (why_incomplete(cut) or "")
