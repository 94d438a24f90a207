"""Attached files: real files in tmp_path, read as a user's would be, and the message
they become."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bastion_desktop.core.attachments import (
    MAX_TOTAL_BYTES,
    Attachment,
    AttachmentError,
    read_attachment,
    with_attachments,
)
from bastion_desktop.core.chat import title_from


def test_a_text_file_is_read_as_written(tmp_path: Path) -> None:
    path = tmp_path / "notes.md"
    path.write_bytes("# Plan\r\n\r\nCafé at noon.\r\n".encode())
    attachment = read_attachment(path)
    assert attachment == Attachment("notes.md", "# Plan\n\nCafé at noon.\n")
    assert attachment.size == len("# Plan\n\nCafé at noon.\n".encode())


@pytest.mark.parametrize(
    ("data", "text"),
    [
        ("\ufeffname,town\nZoë,Gent\n".encode(), "name,town\nZoë,Gent\n"),  # Excel's CSV
        ("Zoë\n".encode("utf-16"), "Zoë\n"),  # Notepad's "Unicode"
        ("Zoë\n".encode("cp1252"), "Zoë\n"),  # an older Windows editor
    ],
)
def test_the_encodings_editors_write_are_read(tmp_path: Path, data: bytes, text: str) -> None:
    path = tmp_path / "people.csv"
    path.write_bytes(data)
    assert read_attachment(path).text == text


def test_what_cannot_be_attached_is_said_by_name(tmp_path: Path) -> None:
    def refused(path: Path, already: int = 0) -> str:
        with pytest.raises(AttachmentError) as raised:
            read_attachment(path, already)
        return str(raised.value)

    binary = tmp_path / "model.bin"
    binary.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(range(256)))
    assert refused(binary) == (
        "model.bin is not a text file: Bastion attaches text files only (notes, code, "
        "CSV, JSON, Markdown)."
    )
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    assert refused(pdf).startswith("report.pdf is a PDF, and Bastion attaches text files")
    assert "copy the text you want into the message" in refused(pdf)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    assert refused(empty) == "empty.txt is empty; nothing was attached."
    assert refused(tmp_path) == f"{tmp_path.name} is a folder: attach the files in it one by one."
    gone = tmp_path / "gone.txt"
    assert refused(gone) == f"{gone} cannot be found; nothing was attached."
    photo = tmp_path / "photo.JPG"
    photo.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF")
    assert refused(photo) == (
        "photo.JPG is an image, and Bastion attaches text files only (notes, code, CSV, "
        "JSON, Markdown)."
    )
    if hasattr(os, "geteuid") and os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.txt"
        locked.write_text("secret")
        locked.chmod(0)
        assert refused(locked) == "locked.txt cannot be read: you do not have permission."


def test_the_attached_text_of_one_message_is_limited(tmp_path: Path) -> None:
    def too_large(path: Path, already: int = 0) -> str:
        with pytest.raises(AttachmentError, match=r" is too large to attach: one message ") as e:
            read_attachment(path, already)
        return str(e.value)

    # Read up to twice the limit, which falls inside a character; "Ё" is no Windows
    # code page text either, so only the forgiven end tells it from a binary file.
    big = tmp_path / "big.log"
    big.write_text("x" + "Ё" * MAX_TOTAL_BYTES, encoding="utf-8")
    assert too_large(big) == (
        "big.log is too large to attach: one message takes at most 512 KB of attached text."
    )
    # The limit counts the text as the message holds it: a Windows code page file's "€"
    # is three bytes there.
    euros = tmp_path / "prices.txt"
    euros.write_bytes(b"\x80" * (MAX_TOTAL_BYTES // 2))
    too_large(euros)
    # UTF-16 takes two bytes on disk for what the message holds in one.
    wide = tmp_path / "wide.log"
    wide.write_bytes(("a" * 300_000).encode("utf-16"))
    assert read_attachment(wide).size == 300_000
    wide.write_bytes(("a" * (MAX_TOTAL_BYTES + 7)).encode("utf-16"))
    too_large(wide)
    # Beside files attached already.
    half = tmp_path / "half.log"
    half.write_text("x" * (MAX_TOTAL_BYTES // 2), encoding="utf-8")
    assert read_attachment(half, already=MAX_TOTAL_BYTES // 2).size == MAX_TOTAL_BYTES // 2
    assert too_large(half, MAX_TOTAL_BYTES // 2 + 1).endswith(
        "512 KB of attached text, and 256 KB are attached already."
    )
    assert too_large(big, 100).endswith(", and under 1 KB are attached already.")


def test_utf32_and_old_mac_line_ends_are_read(tmp_path: Path) -> None:
    path = tmp_path / "old.txt"
    path.write_bytes("one\rtwo\r".encode("utf-32"))
    assert read_attachment(path).text == "one\ntwo\n"


def test_the_message_names_each_file_and_fences_it_whole() -> None:
    readme = Attachment("README.md", "Run:\n\n```sh\nmake\n```\n")
    script = Attachment("build.py", "print('hi')\n")
    message = with_attachments("  What does this do?\n", [readme, script])
    assert message == (
        "What does this do?\n\n"
        "Attached: README.md\n````markdown\nRun:\n\n```sh\nmake\n```\n````\n\n"
        "Attached: build.py\n```python\nprint('hi')\n```"
    )
    assert with_attachments(" ", [script]) == "Attached: build.py\n```python\nprint('hi')\n```"
    assert with_attachments("Hi", []) == "Hi"


def test_a_conversation_is_titled_with_the_words_not_the_files() -> None:
    script = Attachment("build.py", "print('hi')\n")
    notes = Attachment("notes.txt", "Attached: nothing\n")
    assert title_from(with_attachments("Why does it print hi?", [script])) == (
        "Why does it print hi?"
    )
    assert title_from(with_attachments("", [script, notes])) == "build.py, notes.txt"
    assert title_from("Attached: a note I wrote") == "Attached: a note I wrote"
    # A file that holds what looks like an attachment of its own is one file.
    inner = with_attachments("", [Attachment("plan.txt", "secret")])
    outer = Attachment("draft.md", "Notes\n\n" + inner + "\n")
    assert title_from(with_attachments("", [outer])) == "draft.md"
    assert title_from(with_attachments("Check", [outer, script])) == "Check"
