"""A cheap look at a file before llama.cpp is let near it.

llama.cpp reports most bad files by failing the load, but it prints the reason to
stderr and the binding raises a generic error; a header check here turns the common
mistakes (a folder, an empty file, not a GGUF at all) into a sentence the user can act
on. Anything subtler is caught by the load itself, in the model host process, where a
crash cannot take the app down.
"""

from __future__ import annotations

import struct
from pathlib import Path

from bastion_desktop.core.errors import ModelLoadError, ModelNotFoundError

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
_HEADER = struct.Struct("<4sIQQ")  # magic, version, tensor count, metadata count


def check_gguf_header(path: Path) -> None:
    if not path.exists():
        raise ModelNotFoundError(f"No model file at {path}.")
    if path.is_dir():
        raise ModelLoadError(f"{path} is a folder, not a GGUF model file.")
    try:
        with path.open("rb") as handle:
            header = handle.read(_HEADER.size)
    except OSError as error:
        raise ModelLoadError(f"Cannot read {path}: {error.strerror or error}.") from error
    if not header:
        raise ModelLoadError(f"{path.name} is empty (0 bytes); download or copy it again.")
    if header[:4] != GGUF_MAGIC:
        raise ModelLoadError(
            f"{path.name} is not a GGUF model file (it does not start with the GGUF "
            "signature). Bastion runs GGUF files, such as those in the model catalog."
        )
    if len(header) < _HEADER.size:
        raise ModelLoadError(f"{path.name} is cut short: its GGUF header is incomplete.")
    _magic, version, _tensors, _metadata = _HEADER.unpack(header)
    if version not in SUPPORTED_VERSIONS:
        raise ModelLoadError(
            f"{path.name} uses GGUF version {version}; this Bastion reads versions "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))}."
        )
