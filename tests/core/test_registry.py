"""The installed-models registry under concurrent use: the GUI thread, worker threads
and the engine loop all add and remove models (downloads finishing, imports, the
starter), each as a read-modify-write of one JSON file."""

from __future__ import annotations

import threading
from pathlib import Path

from bastion_desktop.core.installed_models import ModelRegistry, RegisteredModel

SHA = "0" * 64


def model(model_id: str, tmp_path: Path) -> RegisteredModel:
    return RegisteredModel(
        id=model_id, name=model_id, path=tmp_path / f"{model_id}.gguf", sha256=SHA, size=1,
        source="local",
    )  # fmt: skip


def test_concurrent_adds_and_removes_lose_no_update(tmp_path: Path) -> None:
    file = tmp_path / "models.json"
    keep = [model(f"kept-{n}", tmp_path) for n in range(4)]
    for entry in keep:
        ModelRegistry(file).add(entry)
    start = threading.Barrier(8)

    def worker(n: int) -> None:
        # Each thread its own registry object on the same file, as the app's windows
        # and services hold theirs.
        registry = ModelRegistry(file)
        start.wait()
        for round_ in range(15):
            registry.add(model(f"t{n}-{round_}", tmp_path))
        if n < len(keep):
            registry.remove(keep[n].id)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = {m.id for m in ModelRegistry(file).list()}
    assert ids == {f"t{n}-{r}" for n in range(8) for r in range(15)}


def test_a_change_by_another_process_is_seen(tmp_path: Path) -> None:
    file = tmp_path / "models.json"
    registry = ModelRegistry(file)
    registry.add(model("first", tmp_path))
    assert registry.get("first") is not None
    # Another process (bastion models import, say) rewrites the file.
    other = file.read_text().replace('"first"', '"renamed"')
    file.write_text(other.replace('"id": "renamed"', '"id": "second"', 1))
    assert [m.id for m in registry.list()] == ["second"]
