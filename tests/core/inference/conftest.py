"""Model files for host tests: broken ones, and the starter with another template."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def copy_gguf_with_template(reader: Any, target: Path, template: str) -> Path:
    """Rewrite a GGUF with `template` as its embedded chat template, using the `gguf`
    package the way llama.cpp's gguf_new_metadata script does."""
    import gguf

    architecture = reader.get_field(gguf.Keys.General.ARCHITECTURE)
    assert architecture is not None
    writer = gguf.GGUFWriter(target, arch=architecture.contents(), endianess=reader.endianess)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        if field.name.startswith(gguf.Keys.Tokenizer.CHAT_TEMPLATE):
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), value_type, sub_type=sub_type)
    writer.add_chat_template(template)
    for tensor in reader.tensors:
        writer.add_tensor_info(
            tensor.name,
            tensor.data.shape,
            tensor.data.dtype,
            tensor.data.nbytes,
            tensor.tensor_type,
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in reader.tensors:
        writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
    writer.close()
    return target


@pytest.fixture(scope="module")
def starter_reader(starter_path: Path) -> Any:
    """The starter parsed by the gguf package: slow (its 262k-token vocabulary is read
    field by field), so it is parsed once per module."""
    import gguf

    return gguf.GGUFReader(starter_path)


@pytest.fixture
def gguf_with_template(starter_reader: Any, tmp_path: Path) -> Callable[[str], Path]:
    def make(template: str) -> Path:
        return copy_gguf_with_template(starter_reader, tmp_path / "templated.gguf", template)

    return make
