"""Text files attached to a message: read, checked, and written into the message.

An attachment becomes part of the message's text, as if the user had pasted the file:
a line naming it, then its contents in a fenced block. So the guardrails check it with
the message (a secret in an attached file is masked, or stops the message, as a typed
one would), the history keeps it encrypted with the message, the model reads it within
its context window like any other text, and an edit or a regeneration has it still.
Nothing of the file is copied anywhere else: no temporary file, no cache.

Only text is attached. A PDF, a Word document or an image would need a converter that
Bastion does not ship; the user is told so and can paste the text instead.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path

from bastion_desktop.core.errors import BastionError

# All attachments of one message together. 512 KiB of text is over 100,000 tokens: more
# than the context window of any model this machine's users run, so nothing a model
# could read is refused, and the guardrails never scan megabytes.
MAX_TOTAL_BYTES = 512 * 1024
# The head of a file searched for a NUL byte: text has none, nearly every binary format
# has one early.
_SNIFF_BYTES = 8192
# What a fenced block's language is, for a few common names; the rest get none.
_LANGUAGES = {
    ".py": "python",
    ".js": "javascript",
    ".ts": "typescript",
    ".json": "json",
    ".md": "markdown",
    ".c": "c",
    ".h": "c",
    ".cpp": "cpp",
    ".hpp": "cpp",
    ".rs": "rust",
    ".go": "go",
    ".java": "java",
    ".kt": "kotlin",
    ".cs": "csharp",
    ".rb": "ruby",
    ".php": "php",
    ".sh": "bash",
    ".ps1": "powershell",
    ".sql": "sql",
    ".html": "html",
    ".css": "css",
    ".xml": "xml",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".toml": "toml",
    ".ini": "ini",
    ".csv": "csv",
}
# Formats people try to attach that are not text: what each is, and whether its text
# could be copied out of it into the message.
_DOCUMENTS = {
    ".pdf": ("a PDF", True),
    ".doc": ("a Word document", True),
    ".docx": ("a Word document", True),
    ".odt": ("an OpenDocument text", True),
    ".rtf": ("a rich-text document", True),
    ".xls": ("a spreadsheet", True),
    ".xlsx": ("a spreadsheet", True),
    ".ods": ("a spreadsheet", True),
    ".ppt": ("a presentation", True),
    ".pptx": ("a presentation", True),
    ".png": ("an image", False),
    ".jpg": ("an image", False),
    ".jpeg": ("an image", False),
    ".gif": ("an image", False),
    ".webp": ("an image", False),
    ".zip": ("an archive", False),
}
_TEXT_ONLY = "Bastion attaches text files only (notes, code, CSV, JSON, Markdown)"
_BACKTICKS = re.compile(r"`{3,}")
# Where `with_attachments` put a file: its line, then the opening fence and its language.
_ATTACHED = re.compile(r"Attached: ([^\n]+)\n(`{3,})[^`\n]*\n")
# Byte-order marks, longest first: UTF-32's begins with UTF-16's.
_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)


class AttachmentError(BastionError):
    """A file that cannot be attached; the message and the other attachments are kept."""


@dataclass(frozen=True)
class Attachment:
    name: str
    text: str

    @property
    def size(self) -> int:
        """Its size in bytes as UTF-8, what the total limit counts."""
        return len(self.text.encode("utf-8"))


def read_attachment(path: Path, already: int = 0) -> Attachment:
    """The text of the file at `path`, to attach beside attachments of `already` bytes.

    Raises an `AttachmentError` whose sentence names the file and says why: not found,
    a folder, unreadable, not text, empty, or too large for one message.
    """
    name = path.name
    try:
        if path.is_dir():
            raise AttachmentError(f"{name} is a folder: attach the files in it one by one.")
        with path.open("rb") as handle:
            # A text file of more than twice the limit is too large in any encoding
            # (UTF-16 takes two bytes for a character UTF-8 writes in one).
            data = handle.read(2 * MAX_TOTAL_BYTES + 1)
    except FileNotFoundError:
        raise AttachmentError(f"{path} cannot be found; nothing was attached.") from None
    except PermissionError:
        raise AttachmentError(f"{name} cannot be read: you do not have permission.") from None
    except OSError as error:
        raise AttachmentError(f"{name} cannot be read ({error.strerror or error}).") from None
    document = _DOCUMENTS.get(path.suffix.lower())
    if document is not None:
        kind, has_text = document
        advice = ": copy the text you want into the message instead" if has_text else ""
        raise AttachmentError(f"{name} is {kind}, and {_TEXT_ONLY}{advice}.")
    cut = len(data) > 2 * MAX_TOTAL_BYTES
    text = _decode(data[: 2 * MAX_TOTAL_BYTES], cut=cut)
    if text is None:
        raise AttachmentError(f"{name} is not a text file: {_TEXT_ONLY}.")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    attachment = Attachment(name, text)
    if cut or attachment.size > MAX_TOTAL_BYTES - already:
        more = f", and {_kilobytes(already)} are attached already" if already else ""
        raise AttachmentError(
            f"{name} is too large to attach: one message takes at most "
            f"{MAX_TOTAL_BYTES // 1024} KB of attached text{more}."
        )
    if not text.strip():
        raise AttachmentError(f"{name} is empty; nothing was attached.")
    return attachment


def _kilobytes(size: int) -> str:
    return "under 1 KB" if size < 1024 else f"{size / 1024:,.0f} KB"


def _decode(data: bytes, *, cut: bool) -> str | None:
    """Text in UTF-8 (with or without a byte-order mark), in UTF-16 or UTF-32 with one,
    or in the Windows code page older editors write; None for anything else. Data `cut`
    at the size limit may end inside a character: that end is forgiven, as the file is
    refused for its size, not called binary."""
    encodings = [encoding for bom, encoding in _BOMS if data.startswith(bom)][:1]
    if not encodings:
        if b"\x00" in data[:_SNIFF_BYTES]:
            return None
        encodings = ["utf-8-sig", "cp1252"]
    for encoding in encodings:
        for end in range(len(data), len(data) - (4 if cut else 1), -1):
            with contextlib.suppress(UnicodeDecodeError):
                return data[: max(end, 0)].decode(encoding)
    return None


def with_attachments(text: str, attachments: list[Attachment]) -> str:
    """The message the model, the guardrails and the history get: what the user wrote,
    then each file as a line naming it and a fenced block. The fence is longer than any
    run of backticks in the file, so a Markdown file's own code blocks stay inside it."""
    parts = [text.strip()] if text.strip() else []
    for attachment in attachments:
        body = attachment.text.strip("\n")
        longest = max((len(run) for run in _BACKTICKS.findall(body)), default=2)
        fence = "`" * max(3, longest + 1)
        language = _LANGUAGES.get(Path(attachment.name).suffix.lower(), "")
        parts.append(f"Attached: {attachment.name}\n{fence}{language}\n{body}\n{fence}")
    return "\n\n".join(parts)


def words_of(message: str) -> str:
    """What the user wrote in a message made by `with_attachments`, without the files;
    the files' names when nothing was written. A conversation is titled with it."""
    for start in (0, *(m.end() for m in re.finditer(r"\n\n", message))):
        names = _attached_names(message, start)
        if names:
            words = message[:start].strip()
            return words or ", ".join(names)
    return message


def _attached_names(message: str, position: int) -> list[str]:
    """The names of the files that make up the whole of `message` from `position` on,
    as `with_attachments` writes them; none when something else is there."""
    names: list[str] = []
    while True:
        header = _ATTACHED.match(message, position)
        if header is None:
            return []
        fence = header.group(2)
        # The body holds no run of backticks as long as its fence: the first one ends it.
        close = message.find("\n" + fence, header.end() - 1)
        if close < 0:
            return []
        names.append(header.group(1))
        position = close + 1 + len(fence)
        if position == len(message):
            return names
        if not message.startswith("\n\n", position):
            return []
        position += 2
