"""The app's identity to the desktop: the QApplication that `make_application` builds
names the desktop entry (so docks and task switchers match its windows to the entry and
its icon) and carries the window icon from the package data. On X11 Qt gives windows
the class (WM_CLASS) of the application's name, which the entry's StartupWMClass names
for docks that match by it (GNOME and KDE read the desktop file name Qt also sets).

It runs in a child process: in this one pytest-qt's QApplication exists already, and
`make_application` hands that back as it is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

DESKTOP_ENTRY = (
    Path(__file__).resolve().parents[2] / "resources" / "linux" / "org.bastion.Bastion.desktop"
)

PROBE = """
import json
from bastion_desktop.ui.startup import make_application
app = make_application()
icon = app.windowIcon()
print(json.dumps({
    "desktop_file_name": app.desktopFileName(),
    "application_name": app.applicationName(),
    "icon_null": icon.isNull(),
    "icon_sizes": [[s.width(), s.height()] for s in icon.availableSizes()],
}))
"""


def test_the_application_names_its_desktop_entry_and_carries_the_icon() -> None:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["desktop_file_name"] == "org.bastion.Bastion"
    assert not seen["icon_null"]
    assert seen["icon_sizes"] == [[256, 256]]
    entry = DESKTOP_ENTRY.read_text(encoding="utf-8").splitlines()
    assert f"StartupWMClass={seen['application_name']}" in entry
