"""GGUF files from disk: imported in place or as a copy, with their metadata; removed
with their file only when Bastion owns it."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from bastion_desktop.core.errors import ModelLoadError, ModelNotFoundError
from bastion_desktop.core.hub.errors import GgufFormatError, NotEnoughSpaceError
from bastion_desktop.core.hub.local_files import import_gguf, remove_model
from bastion_desktop.core.installed_models import ModelRegistry, RegisteredModel
from tests.core.hub.gguf_files import write_tiny_gguf


def test_import_in_place_reads_the_metadata_and_never_deletes_the_file(
    tiny_gguf: Path, registry: ModelRegistry, models_dir: Path
) -> None:
    before = tiny_gguf.read_bytes()
    model = import_gguf(tiny_gguf, registry, models_dir, role="safety")
    assert model.path == tiny_gguf.resolve()
    assert model.sha256 == hashlib.sha256(before).hexdigest()
    assert (model.source, model.role, model.owns_file) == ("local", "safety", False)
    assert (model.architecture, model.quantization) == ("llama", "Q4_K_M")
    assert model.context_length == 2048
    assert model.has_chat_template
    assert model.name == "Tiny Test Q4_K_M"
    assert model.license == "apache-2.0"
    assert registry.get(model.id) == model
    removed = remove_model(registry, model.id, models_dir)
    assert removed.deleted_files == ()
    assert tiny_gguf.read_bytes() == before
    assert registry.list() == []


def test_an_imported_copy_is_owned_and_removed_with_its_file(
    tiny_gguf: Path, registry: ModelRegistry, models_dir: Path
) -> None:
    model = import_gguf(tiny_gguf, registry, models_dir, mode="copy", name="My Tiny")
    assert model.id == "my-tiny"
    assert model.owns_file
    assert model.path.parent.parent == models_dir / "imported"
    assert model.path.read_bytes() == tiny_gguf.read_bytes()
    assert [p.name for p in model.path.parent.iterdir()] == [tiny_gguf.name], "no partial left"
    removed = remove_model(registry, model.id, models_dir)
    assert removed.deleted_files == (model.path,)
    assert not model.path.exists()
    assert not (models_dir / "imported").exists(), "empty folders are pruned"
    assert tiny_gguf.exists(), "the original is untouched"


def test_a_split_model_is_imported_whole(
    tmp_path: Path, registry: ModelRegistry, models_dir: Path
) -> None:
    parts = write_tiny_gguf(tmp_path / "Split-Q8_0.gguf", layers=4, split_max_tensors=3)
    model = import_gguf(parts[1], registry, models_dir, mode="copy")
    assert [p.file for p in model.parts] == [p.name for p in parts]
    assert model.path == model.parts[0].path
    assert model.size == sum(p.stat().st_size for p in parts)
    assert all(p.path.is_file() for p in model.parts)
    removed = remove_model(registry, model.id, models_dir)
    assert len(removed.deleted_files) == 4


def test_bad_files_are_sentences(tmp_path: Path, registry: ModelRegistry, models_dir: Path) -> None:
    text = tmp_path / "notes.gguf"
    text.write_text("not a model")
    with pytest.raises(ModelLoadError, match="not a GGUF model file"):
        import_gguf(text, registry, models_dir)
    with pytest.raises(ModelNotFoundError, match="No model file at"):
        import_gguf(tmp_path / "absent.gguf", registry, models_dir)
    parts = write_tiny_gguf(tmp_path / "Half-Q8_0.gguf", layers=4, split_max_tensors=3)
    parts[-1].unlink()
    with pytest.raises(GgufFormatError, match="is missing from"):
        import_gguf(parts[0], registry, models_dir)
    # A download or copy cut short: its header reads fine, its tensors do not all fit.
    parts = write_tiny_gguf(tmp_path / "Short-Q8_0.gguf", layers=4, split_max_tensors=3)
    data = parts[-1].read_bytes()
    parts[-1].write_bytes(data[:-16])
    for mode in ("reference", "copy"):
        with pytest.raises(GgufFormatError, match=re.escape(f"{parts[-1].name} is incomplete")):
            import_gguf(parts[0], registry, models_dir, mode=mode)  # type: ignore[arg-type]
    assert registry.list() == []


def test_a_copy_that_does_not_fit_leaves_nothing(
    tiny_gguf: Path, tmp_path: Path, registry: ModelRegistry, small_disk: Path
) -> None:
    big = write_tiny_gguf(tmp_path / "Big-F16.gguf", vocab=50_000)[0]  # about 20 MB
    with pytest.raises(NotEnoughSpaceError, match="import the file where it is instead"):
        import_gguf(big, registry, small_disk / "models", mode="copy")
    assert list((small_disk / "models" / "imported").rglob("*")) == [
        small_disk / "models" / "imported" / "big-f16"
    ]
    assert registry.list() == []


@pytest.mark.log_warnings("a refused removal is logged as a warning")
def test_remove_never_deletes_outside_the_models_folder(
    tiny_gguf: Path, registry: ModelRegistry, models_dir: Path
) -> None:
    # A hand-edited (or damaged) registry claims Bastion owns a file elsewhere.
    stray = RegisteredModel(
        id="stray", name="Stray", path=tiny_gguf, sha256="0" * 64, size=1,
        source="hub", owns_file=True,
    )  # fmt: skip
    registry.add(stray)
    assert remove_model(registry, "stray", models_dir).deleted_files == ()
    assert tiny_gguf.exists()
    with pytest.raises(ModelNotFoundError, match="No installed model has the id 'stray'"):
        remove_model(registry, "stray", models_dir)
