"""GGUF files for the model manager's tests: tiny ones written with the `gguf` package,
and a byte-level splitter that cuts a real model into `-0000k-of-0000n` parts the way
llama.cpp's gguf-split does (so that llama.cpp can load the parts)."""

from __future__ import annotations

import struct
from pathlib import Path

from bastion_desktop.core.hub.filenames import model_stem, split_part_name
from bastion_desktop.core.hub.gguf_metadata import read_gguf_file

_UINT16, _INT32, _STRING = 2, 5, 8


def write_tiny_gguf(
    path: Path,
    *,
    layers: int = 2,
    embedding: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    vocab: int = 32,
    context: int = 2048,
    file_type: int = 15,
    chat_template: str | None = "{{ messages }}",
    name: str = "Tiny Test",
    split_max_tensors: int = 0,
) -> list[Path]:
    """A small llama-shaped GGUF (not a working model: the weights are zeros). With
    `split_max_tensors`, the gguf package writes it in parts; returns every file."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(path, "llama", split_max_tensors=split_max_tensors)
    writer.add_name(name)
    writer.add_block_count(layers)
    writer.add_context_length(context)
    writer.add_embedding_length(embedding)
    writer.add_feed_forward_length(embedding * 2)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_file_type(file_type)
    writer.add_license("apache-2.0")
    writer.add_token_list([f"tok{i}" for i in range(vocab)])
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    writer.add_tensor("token_embd.weight", np.zeros((vocab, embedding), dtype=np.float32))
    for layer in range(layers):
        for part, rows in (("attn_q", embedding), ("attn_k", embedding // heads * kv_heads)):
            tensor = np.zeros((rows, embedding), dtype=np.float16)
            writer.add_tensor(f"blk.{layer}.{part}.weight", tensor)
    writer.add_tensor("output.weight", np.zeros((vocab, embedding), dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if split_max_tensors:
        stem = path.name.removesuffix(".gguf")
        return sorted(path.parent.glob(f"{stem}-0000*-of-*.gguf"))
    return [path]


def _kv(key: str, value_type: int, packed: bytes) -> bytes:
    raw = key.encode()
    return struct.pack("<Q", len(raw)) + raw + struct.pack("<I", value_type) + packed


def split_gguf(source: Path, folder: Path, parts: int) -> list[Path]:
    """Cut `source` into `parts` files by tensors; the first keeps all the metadata."""
    meta = read_gguf_file(source)
    tensors = sorted(meta.tensors, key=lambda t: t.offset)
    size = -(-len(tensors) // parts)
    groups = [tensors[i : i + size] for i in range(0, len(tensors), size)]
    assert len(groups) == parts
    raw = source.read_bytes()
    alignment = int(meta.values.get("general.alignment", 32))  # type: ignore[arg-type]
    stem = model_stem(source.name)
    paths = []
    for index, group in enumerate(groups):
        split_kv = (
            _kv("split.no", _UINT16, struct.pack("<H", index))
            + _kv("split.count", _UINT16, struct.pack("<H", parts))
            + _kv("split.tensors.count", _INT32, struct.pack("<i", len(tensors)))
        )
        kv = (raw[24 : meta.metadata_end] if index == 0 else b"") + split_kv
        kv_count = (len(meta.values) if index == 0 else 0) + 3
        base = group[0].offset
        infos = b""
        for tensor in group:
            name = tensor.name.encode()
            infos += struct.pack("<Q", len(name)) + name + struct.pack("<I", len(tensor.shape))
            infos += b"".join(struct.pack("<Q", d) for d in tensor.shape)
            infos += struct.pack("<IQ", tensor.ggml_type, tensor.offset - base)
        head = b"GGUF" + struct.pack("<IQQ", 3, len(group), kv_count) + kv + infos
        head += b"\0" * (-len(head) % alignment)
        end = group[-1].offset + group[-1].nbytes
        data = raw[meta.data_offset + base : meta.data_offset + end]
        path = folder / split_part_name(stem, index + 1, parts)
        path.write_bytes(head + data)
        paths.append(path)
    return paths
