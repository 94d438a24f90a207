"""Hub search and file listing against the emulator: sizes, quantizations, LFS sha256s,
split models grouped, gating and licenses shown before any download."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion_desktop.core.hub.errors import HubNotFoundError, HubUnreachableError
from bastion_desktop.core.hub.search import (
    HubFile,
    group_gguf_files,
    list_repo_gguf_files,
    search_gguf_repos,
)
from tests.core.hub.hub_emulator import HubEmulator


@pytest.fixture
def repos(hub: HubEmulator, tiny_gguf: Path) -> HubEmulator:
    hub.add_repo(
        "bartowski/Llama-3.2-1B-Instruct-GGUF",
        {
            "Llama-3.2-1B-Instruct-Q4_K_M.gguf": tiny_gguf,
            "Llama-3.2-1B-Instruct-Q8_0.gguf": tiny_gguf.read_bytes() + b"\0" * 64,
            "big/Llama-3.2-1B-Instruct-F16-00001-of-00002.gguf": b"GGUF part one",
            "big/Llama-3.2-1B-Instruct-F16-00002-of-00002.gguf": b"GGUF part two!",
            "mmproj-model-f16.gguf": b"GGUF projector",
            "README.md": b"# readme",
        },
        license="llama3.2",
        gguf={"total": 1_235_814_432, "architecture": "llama", "context_length": 131072},
    )
    hub.add_repo("meta-llama/Llama-Guard-3-1B-GGUF", {"guard-Q4_K_M.gguf": b"GGUF"}, gated="manual")
    hub.add_repo("someone/llama-notes", {"notes.txt": b"hi"}).downloads = 5
    return hub


def test_search_finds_gguf_repositories_with_license_and_gating(repos: HubEmulator) -> None:
    found = search_gguf_repos("llama")
    assert [r.id for r in found] == [
        "bartowski/Llama-3.2-1B-Instruct-GGUF", "meta-llama/Llama-Guard-3-1B-GGUF",
    ]  # fmt: skip
    assert [r.license for r in found] == ["llama3.2", "apache-2.0"]
    assert [r.gated for r in found] == [False, True]
    assert found[0].downloads == 100


def test_files_are_listed_with_size_quantization_and_sha256(
    repos: HubEmulator, tiny_gguf: Path
) -> None:
    listing = list_repo_gguf_files("bartowski/Llama-3.2-1B-Instruct-GGUF")
    assert listing.revision == repos.repos["bartowski/Llama-3.2-1B-Instruct-GGUF"].commit
    assert (listing.license, listing.gated) == ("llama3.2", False)
    assert (listing.context_length, listing.architecture) == (131072, "llama")
    by_name = {c.name: c for c in listing.choices}
    assert set(by_name) == {
        "Llama-3.2-1B-Instruct-Q4_K_M.gguf",
        "Llama-3.2-1B-Instruct-Q8_0.gguf",
        "big/Llama-3.2-1B-Instruct-F16",
    }, "the projector and the README are not models"
    q4 = by_name["Llama-3.2-1B-Instruct-Q4_K_M.gguf"]
    hub_file = repos.file("bartowski/Llama-3.2-1B-Instruct-GGUF", q4.first.path)
    assert (q4.quantization, q4.size, q4.first.sha256) == (
        "Q4_K_M", tiny_gguf.stat().st_size, hub_file.sha256,
    )  # fmt: skip
    split = by_name["big/Llama-3.2-1B-Instruct-F16"]
    assert split.is_split
    assert split.quantization == "F16"
    assert [p.path.rsplit("-", 3)[-3] for p in split.parts] == ["00001", "00002"]
    assert split.size == len(b"GGUF part one") + len(b"GGUF part two!")
    assert listing.choice_for("big/Llama-3.2-1B-Instruct-F16-00002-of-00002.gguf") == split


def test_a_gated_repository_is_flagged_in_its_listing(repos: HubEmulator) -> None:
    assert list_repo_gguf_files("meta-llama/Llama-Guard-3-1B-GGUF").gated


def test_incomplete_split_models_are_not_offered() -> None:
    files = [
        HubFile("m-Q4_K_M-00001-of-00003.gguf", 10, "a" * 64, None),
        HubFile("m-Q4_K_M-00003-of-00003.gguf", 10, "b" * 64, None),
        HubFile("m-Q8_0.gguf", 30, "c" * 64, None),
    ]
    choices, incomplete = group_gguf_files(files)
    assert [c.name for c in choices] == ["m-Q8_0.gguf"]
    assert incomplete == ["m-Q4_K_M"]


def test_a_missing_repository_is_a_sentence(repos: HubEmulator) -> None:
    with pytest.raises(HubNotFoundError, match="No repository nobody/nothing on the Hub"):
        list_repo_gguf_files("nobody/nothing")


def test_no_network_is_one_sentence(hub: HubEmulator) -> None:
    hub.shutdown()
    with pytest.raises(HubUnreachableError, match=r"^Cannot reach the Hub at .*try again\.$"):
        search_gguf_repos("llama")
    with pytest.raises(HubUnreachableError, match=r"^Cannot reach the Hub at .*try again\.$"):
        list_repo_gguf_files("bartowski/Llama-3.2-1B-Instruct-GGUF")
