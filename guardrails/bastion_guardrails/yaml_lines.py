"""YAML loaded with the line of every key, so a problem can point at its line."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bastion_guardrails.problems import ProfileProblem

Path = tuple[str | int, ...]


@dataclass
class LineIndex:
    lines: dict[Path, int] = field(default_factory=dict)

    def line(self, *path: str | int) -> int | None:
        """The line of `path`, or of its nearest ancestor that exists."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)


def _index(node: Any, path: Path, index: LineIndex) -> None:
    import yaml  # type: ignore[import-untyped]

    index.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*path, str(key.value))
            index.lines[child] = key.start_mark.line + 1
            _index(value, child, index)
    elif isinstance(node, yaml.SequenceNode):
        for position, item in enumerate(node.value):
            _index(item, (*path, position), index)


def load_yaml(text: str, file: str) -> tuple[Any, LineIndex]:
    """The data in `text` and its line index; a syntax error raises ProfileProblem."""
    import yaml

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(error, "problem", None) or str(error).splitlines()[0]
        problem = ProfileProblem(file, f"not valid YAML: {reason}", line=line)
        raise YamlSyntaxError(problem) from None
    except RecursionError:
        raise YamlSyntaxError(ProfileProblem(file, "nested too deeply to be read")) from None
    index = LineIndex()
    if node is not None:
        _index(node, (), index)
    return data, index


class YamlSyntaxError(Exception):
    def __init__(self, problem: ProfileProblem) -> None:
        super().__init__(str(problem))
        self.problem = problem
