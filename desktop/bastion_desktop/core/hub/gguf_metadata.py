"""A lean GGUF metadata reader: the header, the key/value pairs and the tensor table,
without the tensor data.

`gguf.GGUFReader` builds a field object for every element of every array, which takes
about 20 s on the starter model (a 262k-token vocabulary); the model manager only needs
a few dozen scalars, so arrays of strings are stepped over length by length and numeric
arrays are skipped in one jump. Reading a 5 GB model's metadata takes a fraction of a
second, and the file is never read past its tensor table. Every offset is checked
against the file size, so a damaged or hostile file gives a sentence, not a crash.

Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
"""

from __future__ import annotations

import itertools
import mmap
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bastion_desktop.core.hub.errors import GgufFormatError
from bastion_desktop.core.hub.filenames import split_part, split_part_name

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
# Numeric arrays up to this length are kept (per-layer head counts); longer ones, and
# all string arrays (vocabularies, merges), are recorded only by type and length.
MAX_KEPT_ARRAY = 4096

# llama.cpp's file_type numbers (enum llama_ftype) for the quantizations people meet.
FILE_TYPE_NAMES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
    10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
    16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S",
    22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M",
    28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0",
    37: "TQ2_0", 38: "MXFP4",
}  # fmt: skip

# GGUF value types: struct format of the scalar ones.
_SCALARS: dict[int, struct.Struct] = {
    0: struct.Struct("<B"), 1: struct.Struct("<b"), 2: struct.Struct("<H"),
    3: struct.Struct("<h"), 4: struct.Struct("<I"), 5: struct.Struct("<i"),
    6: struct.Struct("<f"), 7: struct.Struct("<?"), 10: struct.Struct("<Q"),
    11: struct.Struct("<q"), 12: struct.Struct("<d"),
}  # fmt: skip
_STRING, _ARRAY = 8, 9
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_HEADER = struct.Struct("<4sIQQ")

Scalar = int | float | bool | str
Value = Scalar | list[int | float | bool]


@dataclass(frozen=True)
class SkippedArray:
    """An array not kept in memory: its element type and length (a vocabulary's size)."""

    element_type: int
    length: int


@dataclass(frozen=True)
class GgufTensor:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int  # from the start of the data section
    nbytes: int  # up to the next tensor (alignment padding included)

    @property
    def elements(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count


@dataclass(frozen=True)
class GgufFile:
    """One GGUF file's metadata: keys, the tensor table, and where the data starts."""

    path: Path
    version: int
    values: Mapping[str, Value | SkippedArray]
    tensors: tuple[GgufTensor, ...]
    metadata_end: int  # offset just after the key/value section
    data_offset: int
    file_size: int
    # Where the tensor data must reach, from the start of the data section: the end of
    # the last tensor (its first byte, where its type is one this table does not know).
    data_end: int = 0


@dataclass(frozen=True)
class GgufMetadata:
    """What the model manager needs to know about a model (all its parts, if split)."""

    paths: tuple[Path, ...]
    values: Mapping[str, Value | SkippedArray]
    tensors: tuple[GgufTensor, ...]
    file_size: int
    architecture: str = field(init=False)

    def __post_init__(self) -> None:
        arch = self.values.get("general.architecture")
        object.__setattr__(self, "architecture", arch if isinstance(arch, str) else "unknown")

    def _int(self, key: str) -> int | None:
        value = self.values.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return int(value)

    def arch_int(self, key: str) -> int | None:
        return self._int(f"{self.architecture}.{key}")

    def arch_value(self, key: str) -> Value | SkippedArray | None:
        return self.values.get(f"{self.architecture}.{key}")

    @property
    def name(self) -> str | None:
        value = self.values.get("general.name")
        return value if isinstance(value, str) else None

    @property
    def size_label(self) -> str | None:
        value = self.values.get("general.size_label")
        return value if isinstance(value, str) else None

    @property
    def quantization(self) -> str | None:
        file_type = self._int("general.file_type")
        if file_type is None:
            return None
        return FILE_TYPE_NAMES.get(file_type, f"type {file_type}")

    @property
    def context_length(self) -> int | None:
        return self.arch_int("context_length")

    @property
    def block_count(self) -> int | None:
        return self.arch_int("block_count")

    @property
    def parameters(self) -> int:
        return sum(t.elements for t in self.tensors)

    @property
    def has_chat_template(self) -> bool:
        value = self.values.get("tokenizer.chat_template")
        return isinstance(value, str) and bool(value.strip())

    @property
    def vocabulary_size(self) -> int | None:
        tokens = self.values.get("tokenizer.ggml.tokens")
        return tokens.length if isinstance(tokens, SkippedArray) else None


class _Cursor:
    """Reads little-endian GGUF values from a buffer, refusing to run past its end."""

    def __init__(self, buffer: mmap.mmap | bytes, path: Path) -> None:
        self.buffer = buffer
        self.size = len(buffer)
        self.offset = 0
        self.path = path

    def need(self, count: int) -> None:
        if count < 0 or self.offset + count > self.size:
            raise GgufFormatError(
                f"{self.path.name} is cut short or damaged: its GGUF metadata runs past the "
                "end of the file. Download or copy it again."
            )

    def unpack(self, shape: struct.Struct) -> tuple[object, ...]:
        self.need(shape.size)
        values = shape.unpack_from(self.buffer, self.offset)
        self.offset += shape.size
        return values

    def u32(self) -> int:
        value = self.unpack(_U32)[0]
        assert isinstance(value, int)
        return value

    def u64(self) -> int:
        value = self.unpack(_U64)[0]
        assert isinstance(value, int)
        return value

    def string(self) -> str:
        length = self.u64()
        self.need(length)
        raw = self.buffer[self.offset : self.offset + length]
        self.offset += length
        return bytes(raw).decode("utf-8", errors="replace")

    def skip_strings(self, count: int) -> None:
        buffer, offset, size = self.buffer, self.offset, self.size
        unpack = _U64.unpack_from
        for _ in range(count):
            if offset + 8 > size:
                self.offset = offset
                self.need(8)
            offset += 8 + unpack(buffer, offset)[0]
        self.offset = offset
        self.need(0)

    def value(self, value_type: int) -> Value | SkippedArray:
        if value_type == _STRING:
            return self.string()
        scalar = _SCALARS.get(value_type)
        if scalar is not None:
            found = self.unpack(scalar)[0]
            assert isinstance(found, int | float | bool)
            return found
        if value_type != _ARRAY:
            raise GgufFormatError(
                f"{self.path.name} is damaged: unknown GGUF value type {value_type}."
            )
        element_type = self.u32()
        length = self.u64()
        if element_type == _STRING:
            self.skip_strings(length)
            return SkippedArray(element_type, length)
        element = _SCALARS.get(element_type)
        if element is None:
            raise GgufFormatError(
                f"{self.path.name} is damaged: an array of unsupported type {element_type}."
            )
        self.need(element.size * length)
        if length > MAX_KEPT_ARRAY:
            self.offset += element.size * length
            return SkippedArray(element_type, length)
        items = [element.unpack_from(self.buffer, self.offset + i * element.size)[0]
                 for i in range(length)]  # fmt: skip
        self.offset += element.size * length
        return items


# ggml's tensor types: (elements per block, bytes per block), as ggml.c's type traits.
GGML_BLOCKS: Mapping[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
    9: (32, 40), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176),
    14: (256, 210), 15: (256, 292), 16: (256, 66), 17: (256, 74), 18: (256, 98),
    19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82), 23: (256, 136), 24: (1, 1),
    25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2),
    34: (256, 54), 35: (256, 66), 39: (32, 17),
}  # fmt: skip


def read_gguf_file(path: Path) -> GgufFile:
    """Read one GGUF file's header, keys and tensor table."""
    try:
        with path.open("rb") as handle:
            file_size = path.stat().st_size
            if file_size < _HEADER.size:
                raise GgufFormatError(
                    f"{path.name} is too small to be a GGUF model file ({file_size} bytes)."
                )
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
                return _parse(buffer, path, file_size)
    except OSError as error:
        raise GgufFormatError(f"Cannot read {path}: {error.strerror or error}.") from error


def _parse(buffer: mmap.mmap, path: Path, file_size: int) -> GgufFile:
    cursor = _Cursor(buffer, path)
    magic, version, tensor_count, kv_count = cursor.unpack(_HEADER)
    assert isinstance(version, int)
    assert isinstance(tensor_count, int)
    assert isinstance(kv_count, int)
    if magic != GGUF_MAGIC:
        raise GgufFormatError(f"{path.name} is not a GGUF model file.")
    if version not in (2, 3):
        raise GgufFormatError(f"{path.name} uses GGUF version {version}; Bastion reads 2 and 3.")
    # Every key and tensor takes at least 8 bytes: a larger count is a lie.
    if kv_count > file_size // 8 or tensor_count > file_size // 8:
        raise GgufFormatError(f"{path.name} is damaged: its GGUF header counts are impossible.")
    values: dict[str, Value | SkippedArray] = {}
    for _ in range(kv_count):
        key = cursor.string()
        values[key] = cursor.value(cursor.u32())
    metadata_end = cursor.offset
    raw: list[tuple[str, tuple[int, ...], int, int]] = []
    for _ in range(tensor_count):
        name = cursor.string()
        dims = cursor.u32()
        if dims > 8:
            raise GgufFormatError(f"{path.name} is damaged: tensor {name!r} has {dims} dimensions.")
        shape = tuple(cursor.u64() for _ in range(dims))
        ggml_type = cursor.u32()
        raw.append((name, shape, ggml_type, cursor.u64()))
    alignment = values.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0:
        alignment = DEFAULT_ALIGNMENT
    data_offset = -(-cursor.offset // alignment) * alignment
    data_size = max(0, file_size - data_offset)
    ends = sorted({offset for *_, offset in raw} | {data_size})
    # A tensor's bytes run to the next tensor's start (alignment padding included).
    next_start = dict(itertools.pairwise(ends))
    tensors = tuple(
        GgufTensor(name, shape, kind, offset, max(0, next_start.get(offset, data_size) - offset))
        for name, shape, kind, offset in raw
    )
    data_end = max((t.offset + _least_bytes(t) for t in tensors), default=0)
    return GgufFile(path, version, values, tensors, metadata_end, data_offset, file_size, data_end)


def _least_bytes(tensor: GgufTensor) -> int:
    """The bytes a tensor's data takes, by its ggml type; 1 for a type not listed."""
    if tensor.elements == 0:
        return 0
    block, size = GGML_BLOCKS.get(tensor.ggml_type, (0, 0))
    if block == 0:
        return 1
    return -(-tensor.elements // block) * size


def require_whole(file: GgufFile) -> None:
    """Refuse a GGUF file whose tensor data stops short: a download or a copy that was
    cut off, which llama.cpp would fail on only when loading it."""
    needed = file.data_offset + file.data_end
    if needed > file.file_size:
        raise GgufFormatError(
            f"{file.path.name} is incomplete: it is {file.file_size:,} bytes, but its "
            f"tensors need {needed:,}. It was cut short while being downloaded or copied: "
            "get the file again."
        )


def why_incomplete(path: Path) -> str | None:
    """The sentence for a model (any part of it) whose files stop short, or None; for a
    model llama.cpp would not load, to say why in the user's terms."""
    try:
        for part in split_siblings(path):
            require_whole(read_gguf_file(part))
    except GgufFormatError as error:
        return str(error)
    return None


def split_siblings(path: Path) -> list[Path]:
    """All the parts of a split model, given any one of them (the file alone otherwise)."""
    part = split_part(path.name)
    if part is None:
        return [path]
    return [path.with_name(split_part_name(part.stem, i, part.count))
            for i in range(1, part.count + 1)]  # fmt: skip


def read_gguf_metadata(path: Path) -> GgufMetadata:
    """The metadata of the model that `path` belongs to: its keys come from the file
    (the first part of a split model holds them all), its tensors from every part."""
    paths = split_siblings(path)
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise GgufFormatError(
            f"{path.name} is one part of a split model, but {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} missing from {path.parent}."
        )
    files = [read_gguf_file(p) for p in paths]
    tensors = tuple(t for f in files for t in f.tensors)
    return GgufMetadata(
        paths=tuple(paths),
        values=files[0].values,
        tensors=tensors,
        file_size=sum(f.file_size for f in files),
    )
