#!/bin/sh
# Renders the app icon from its SVG sources into what the installers take:
#   hicolor/<N>x<N>/apps/org.bastion.Bastion.png   Linux (freedesktop hicolor theme)
#   hicolor/scalable/apps/org.bastion.Bastion.svg  Linux, a copy of bastion.svg
#   bastion.ico                                    Windows (16-256 px, PNG-compressed)
#   bastion.icns                                   macOS (16-512 px)
#   desktop/bastion_desktop/resources/bastion.png  the window's icon (256 px), package data
# The outputs are committed: a build machine need not have these converters.
# Needs rsvg-convert (Debian: librsvg2-bin), png2icns (icnsutils) and python3.
# bastion-16.svg is the same drawing on the 16 px grid (bastion.svg's dots blur into a bar
# at 16 px); every other size comes from bastion.svg.
set -eu
cd "$(dirname "$0")"
ID=org.bastion.Bastion

for tool in rsvg-convert png2icns python3; do
    command -v "$tool" >/dev/null || { echo "render.sh: $tool is missing" >&2; exit 1; }
done

source_for() {
    if [ "$1" -le 16 ]; then echo bastion-16.svg; else echo bastion.svg; fi
}

for n in 16 24 32 48 64 128 256 512; do
    mkdir -p "hicolor/${n}x${n}/apps"
    rsvg-convert -w "$n" -h "$n" "$(source_for "$n")" -o "hicolor/${n}x${n}/apps/$ID.png"
done
mkdir -p hicolor/scalable/apps
cp bastion.svg "hicolor/scalable/apps/$ID.svg"
cp "hicolor/256x256/apps/$ID.png" ../../desktop/bastion_desktop/resources/bastion.png

# Windows: an ICO whose images are PNGs (read by Windows Vista and later, and PyInstaller).
python3 - "$ID" <<'PY'
import struct
import sys
from pathlib import Path

sizes = (16, 24, 32, 48, 64, 128, 256)
images = [Path(f"hicolor/{n}x{n}/apps/{sys.argv[1]}.png").read_bytes() for n in sizes]
header = struct.pack("<HHH", 0, 1, len(images))
offset = len(header) + 16 * len(images)
entries = b""
for n, data in zip(sizes, images):
    side = n % 256  # 0 means 256
    entries += struct.pack("<BBBBHHII", side, side, 0, 0, 1, 32, len(data), offset)
    offset += len(data)
Path("bastion.ico").write_bytes(header + entries + b"".join(images))
PY

# macOS: png2icns packs 16, 32, 48 and 128 px (RLE with masks); 256 and 512 px are
# appended as PNG ('ic08', 'ic09', read since Mac OS X 10.5): png2icns would store them as
# JPEG 2000, three times the size.
rm -f bastion.icns
png2icns bastion.icns "hicolor/16x16/apps/$ID.png" "hicolor/32x32/apps/$ID.png" \
    "hicolor/48x48/apps/$ID.png" "hicolor/128x128/apps/$ID.png" >/dev/null
python3 - "$ID" <<'PY'
import struct
import sys
from pathlib import Path

icns = Path("bastion.icns")
body = icns.read_bytes()[8:]
for kind, n in ((b"ic08", 256), (b"ic09", 512)):
    data = Path(f"hicolor/{n}x{n}/apps/{sys.argv[1]}.png").read_bytes()
    body += kind + struct.pack(">I", 8 + len(data)) + data
icns.write_bytes(b"icns" + struct.pack(">I", 8 + len(body)) + body)
PY
echo "render.sh: icons written under $(pwd)"
