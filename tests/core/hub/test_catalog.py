"""The curated catalog ships as package data and says what the issue asks of it."""

from __future__ import annotations

import pytest

from bastion_desktop.core.hub.catalog import (
    CatalogError,
    format_catalog_rows,
    load_catalog,
    parse_catalog,
)
from bastion_desktop.core.hub.filenames import quantization_from_name


def test_the_catalog_is_found_as_package_data() -> None:
    from importlib import resources

    source = resources.files("bastion_desktop").joinpath("resources", "catalog.toml")
    assert source.is_file()
    header = source.read_text(encoding="utf-8").split("version =")[0]
    assert "Sizes are approximate" in header
    assert "checked against the Hub's own metadata" in header


def test_chat_models_span_sizes_and_families() -> None:
    chat = load_catalog().by_role("chat")
    assert len(chat) >= 10
    assert len({m.family.split()[0] for m in chat}) >= 6
    sizes = sorted(m.parameters_b for m in chat)
    assert sizes[0] <= 1.5
    assert sizes[-1] >= 12
    for model in chat:
        assert model.license
        assert model.context_length >= 8192
        assert model.repo.lower().endswith("gguf"), model.repo


def test_guard_models_for_the_safety_role() -> None:
    names = {m.name for m in load_catalog().by_role("safety")}
    assert {"Llama Guard 3 1B", "Llama Guard 3 8B"} <= names
    assert any(n.startswith(("ShieldGemma", "Qwen3Guard")) for n in names)


def test_files_agree_with_their_names_and_sizes_grow_with_precision() -> None:
    order = ["Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0"]
    for model in load_catalog().models:
        for entry in model.files:
            assert quantization_from_name(entry.file) == entry.quantization, entry.file
        sizes = [f.size for f in sorted(model.files, key=lambda f: order.index(f.quantization))]
        assert sizes == sorted(sizes), model.id
        assert model.file_for().quantization == model.recommended
    with pytest.raises(CatalogError, match="has no Q2_K file"):
        load_catalog().models[0].file_for("Q2_K")


def test_a_damaged_catalog_is_a_sentence() -> None:
    with pytest.raises(CatalogError, match="catalog is damaged"):
        parse_catalog("version = 1\n[[models]]\nid = 'x'\n")


def test_rows_for_the_cli() -> None:
    catalog = load_catalog()
    rows = format_catalog_rows(catalog, role="safety")
    assert len(rows) == len(catalog.by_role("safety"))
    assert rows[0].startswith("llama-guard-3-1b")
    assert "Q4_K_M" in rows[0]
