"""The layout's rules (docs/architecture.md): the import-linter contracts in pyproject
hold the layers; these hold what import-linter does not check. No import cycle among the
project's modules (imports for type checking only aside: they never run), and no module
so long that a newcomer cannot read it whole."""

from __future__ import annotations

from pathlib import Path

import grimp

import bastion_desktop
import bastion_guardrails

PACKAGES = ("bastion_desktop", "bastion_guardrails")
MAX_LINES = 800


def _cycles(imports: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in imports[module]:
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for module in sorted(imports):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycle_among_the_projects_modules() -> None:
    graph = grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True)
    modules = set(graph.modules)
    imports = {m: graph.find_modules_directly_imported_by(m) & modules for m in modules}
    # A package's __init__ importing its own modules is how packages work, not a cycle.
    for module, imported in imports.items():
        imported -= {m for m in imported if module.startswith(m + ".")}
    assert _cycles(imports) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_is_longer_than_a_newcomer_reads_whole() -> None:
    long = {}
    for package in (bastion_desktop, bastion_guardrails):
        root = Path(package.__path__[0])
        for path in root.rglob("*.py"):
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > MAX_LINES:
                long[str(path.relative_to(root.parent))] = lines
    assert long == {}
