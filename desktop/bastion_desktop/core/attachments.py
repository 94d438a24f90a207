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
# Formats people try to attach that are not text, and what they are called.
_DOCUMENTS = {
    ".pdf": "a PDF",
    ".doc": "a Word document",
    ".docx": "a Word document",
    ".odt": "an OpenDocument text",
    ".rtf": "a rich-text document",
    ".xls": "a spreadsheet",
    ".xlsx": "a spreadsheet",
    ".ods": "a spreadsheet",
    ".ppt": "a presentation",
    ".pptx": "a presentation",
    ".png": "an image",
    ".jpg": "an image",
    ".jpeg": "an image",
    ".gif": "an image",
    ".webp": "an image",
    ".zip": "an archive",
}
_BACKTICKS = re.compile(r"`{3,}")
# Where `with_attachments` put a file: its line, then the opening fence.
_ATTACHED = re.compile(r"(?:^|\n\n)Attached: ([^\n]+)\n`{3,}")


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

    Raises an `AttachmentError` whose sentence names the file and says why: missing, a
    folder, unreadable, not text, empty, or too large for one message.
    """
    name = path.name
    kind = _DOCUMENTS.get(path.suffix.lower())
    try:
        if path.is_dir():
            raise AttachmentError(f"{name} is a folder: attach the files in it one by one.")
        room = MAX_TOTAL_BYTES - already
        with path.open("rb") as handle:
            data = handle.read(room + 1)
    except FileNotFoundError:
        raise AttachmentError(f"{path} no longer exists; nothing was attached.") from None
    except PermissionError:
        raise AttachmentError(f"{name} cannot be read: you do not have permission.") from None
    except OSError as error:
        raise AttachmentError(f"{name} cannot be read ({error.strerror or error}).") from None
    if kind is not None:
        raise AttachmentError(
            f"{name} is {kind}, and Bastion attaches text files only (notes, code, CSV, "
            "JSON, Markdown): copy the text you want into the message instead."
        )
    text = _decode(data)
    if text is None:
        raise AttachmentError(
            f"{name} is not a text file: Bastion attaches text files only (notes, code, "
            "CSV, JSON, Markdown)."
        )
    if len(data) > room:
        raise AttachmentError(
            f"{name} is too large to attach: one message takes at most "
            f"{MAX_TOTAL_BYTES // 1024} KB of attached text"
            + (f", and {already // 1024:,} KB are attached already." if already else ".")
        )
    if not text.strip():
        raise AttachmentError(f"{name} is empty; nothing was attached.")
    return Attachment(name, text.replace("\r\n", "\n"))


def _decode(data: bytes) -> str | None:
    """Text in UTF-8 (with or without a byte-order mark), UTF-16 with one, or the
    Windows code page older editors write; None for anything else. A file cut at the
    size limit may end inside a character: that end is forgiven, the caller refuses the
    file anyway."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        candidates = [(data, "utf-16")]
    elif b"\x00" in data[:_SNIFF_BYTES]:
        candidates = []
    else:
        candidates = [(data, "utf-8-sig"), (data, "cp1252")]
        try:
            data.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            if error.start >= len(data) - 3 and error.reason == "unexpected end of data":
                candidates.insert(0, (data[: error.start], "utf-8-sig"))
    for candidate, encoding in candidates:
        with contextlib.suppress(UnicodeDecodeError):
            return candidate.decode(encoding)
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
    first = _ATTACHED.search(message)
    if first is None:
        return message
    words = message[: first.start()].strip()
    return words or ", ".join(_ATTACHED.findall(message))
