"""A local Hugging Face Hub: a real HTTP server on 127.0.0.1 that answers the way the
Hub does for the calls huggingface-hub and Bastion make.

- `GET /api/models?search=&filter=&limit=&expand=`: the repository search;
- `GET /api/models/{repo}[/revision/{rev}]?blobs=true`: model info with siblings,
  their sizes, git blob ids and LFS sha256s, `gated`, `cardData.license`, `gguf`;
- `HEAD|GET /{repo}/resolve/{rev}/{file}`: for an LFS file, a 302 to the "CDN" with
  `X-Repo-Commit`, `X-Linked-Etag`, `X-Linked-Size` and `ETag`; a small file is served
  directly; errors carry `X-Error-Code` (RepoNotFound, RevisionNotFound, EntryNotFound,
  GatedRepo) with the Hub's status codes (401 without a token on a gated repo, 403 with
  one that was not granted);
- `HEAD|GET /cdn/{sha256}`: the bytes, with `Range` (206, `Content-Range`, 416).

Faults are injected where the bytes flow, once each: drop the connection at an offset,
stall at an offset, corrupt a byte, ignore `Range`. Every body byte sent is counted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

CHUNK = 64 * 1024


@dataclass
class Fault:
    drop_at: int | None = None  # close the connection when the body reaches this offset
    stall_at: int | None = None  # stop sending at this offset for `stall_seconds`
    stall_seconds: float = 30.0
    corrupt_at: int | None = None  # flip the bits of the byte at this offset, every time
    ignore_range: bool = False
    times: int = 1  # how many transfers the drop/stall applies to
    # From this offset on, send a few bytes at a time at this rate: never silent for
    # long, so never "stalled", but useless (every transfer, regardless of `times`).
    trickle_after: int | None = None
    trickle_bytes_per_second: float = 400.0


@dataclass
class HubFile:
    path: str
    source: Path | bytes
    lfs: bool = True
    size: int = 0
    sha256: str = ""
    blob_id: str = ""

    def __post_init__(self) -> None:
        digest, git = hashlib.sha256(), hashlib.sha1(usedforsecurity=False)
        self.size = (
            len(self.source) if isinstance(self.source, bytes) else self.source.stat().st_size
        )
        git.update(f"blob {self.size}\0".encode())
        for block in self.blocks(0, self.size):
            digest.update(block)
            git.update(block)
        self.sha256 = digest.hexdigest()
        if self.lfs:
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\n"
            pointer += f"size {self.size}\n"
            self.blob_id = hashlib.sha1(pointer.encode(), usedforsecurity=False).hexdigest()
        else:
            self.blob_id = git.hexdigest()

    def blocks(self, start: int, end: int) -> Any:
        if isinstance(self.source, bytes):
            for offset in range(start, end, CHUNK):
                yield self.source[offset : min(end, offset + CHUNK)]
            return
        with self.source.open("rb") as handle:
            handle.seek(start)
            left = end - start
            while left > 0:
                block = handle.read(min(CHUNK, left))
                if not block:
                    return
                left -= len(block)
                yield block


@dataclass
class HubRepo:
    id: str
    files: dict[str, HubFile]
    commit: str
    gated: bool | str = False
    license: str = "apache-2.0"
    granted_tokens: set[str] = field(default_factory=set)
    downloads: int = 100
    gguf: dict[str, Any] | None = None


class HubEmulator:
    def __init__(self) -> None:
        self.repos: dict[str, HubRepo] = {}
        self.faults: dict[str, Fault] = {}  # by sha256
        self.served: dict[str, int] = defaultdict(int)  # body bytes sent, by sha256
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, Range
        self.bytes_per_second: float | None = None  # pace the file bodies, like a real link
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._connections: set[socket.socket] = set()
        self.server = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def add_repo(
        self,
        repo_id: str,
        files: dict[str, Path | bytes],
        *,
        gated: bool | str = False,
        license: str = "apache-2.0",
        lfs: bool = True,
        gguf: dict[str, Any] | None = None,
    ) -> HubRepo:
        commit = hashlib.sha1(repo_id.encode(), usedforsecurity=False).hexdigest()
        hub_files = {p: HubFile(p, s, lfs=lfs) for p, s in files.items()}
        repo = HubRepo(repo_id, hub_files, commit, gated, license, gguf=gguf)
        self.repos[repo_id] = repo
        return repo

    def file(self, repo_id: str, path: str) -> HubFile:
        return self.repos[repo_id].files[path]

    def inject(self, repo_id: str, path: str, fault: Fault) -> None:
        self.faults[self.file(repo_id, path).sha256] = fault

    def served_for(self, repo_id: str, path: str) -> int:
        return self.served[self.file(repo_id, path).sha256]

    def ranges_for(self, repo_id: str, path: str) -> list[str | None]:
        sha = self.file(repo_id, path).sha256
        return [r for m, p, r in self.requests if m == "GET" and p == f"/cdn/{sha}"]

    def shutdown(self) -> None:
        """Gone for good: no new connections, and the open keep-alive ones cut."""
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
        with self._lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)

    # -- the answers ---------------------------------------------------------------

    def model_info(self, repo: HubRepo, blobs: bool) -> dict[str, Any]:
        siblings = []
        for file in repo.files.values():
            entry: dict[str, Any] = {"rfilename": file.path}
            if blobs:
                entry["size"] = 135 if file.lfs else file.size
                entry["blobId"] = file.blob_id
                if file.lfs:
                    entry["lfs"] = {"sha256": file.sha256, "size": file.size, "pointerSize": 135}
            siblings.append(entry)
        info = self.list_entry(repo)
        info.update(
            {
                "modelId": repo.id,
                "author": repo.id.split("/")[0],
                "sha": repo.commit,
                "disabled": False,
                "library_name": "gguf",
                "pipeline_tag": "text-generation",
                "cardData": {"license": repo.license},
                "siblings": siblings,
                "createdAt": "2024-09-25T12:00:00.000Z",
                "usedStorage": sum(f.size for f in repo.files.values()),
            }
        )
        if repo.gguf is not None:
            info["gguf"] = repo.gguf
        return info

    def list_entry(self, repo: HubRepo) -> dict[str, Any]:
        return {
            "_id": hashlib.md5(repo.id.encode(), usedforsecurity=False).hexdigest()[:24],
            "id": repo.id,
            "private": False,
            "gated": repo.gated,
            "downloads": repo.downloads,
            "likes": 7,
            "tags": [
                *(["gguf"] if any(p.endswith(".gguf") for p in repo.files) else []),
                "text-generation",
                f"license:{repo.license}",
            ],
            "lastModified": "2024-09-26T12:00:00.000Z",
        }


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client hanging up mid-transfer is what the fault tests do: not news."""
        error = sys.exc_info()[1]
        if not isinstance(error, ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


def _handler_for(hub: HubEmulator) -> type[BaseHTTPRequestHandler]:
    class Handler(_HubHandler):
        pass

    Handler.hub = hub
    return Handler


_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+?)(?:/revision/(?P<rev>[^/]+))?$")
_CDN = re.compile(r"^/cdn/(?P<sha>[0-9a-f]{64})$")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class _HubHandler(BaseHTTPRequestHandler):
    hub: HubEmulator
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read `hub.requests` instead."""

    def setup(self) -> None:
        super().setup()
        with self.hub._lock:
            self.hub._connections.add(self.connection)

    def finish(self) -> None:
        with self.hub._lock:
            self.hub._connections.discard(self.connection)
        super().finish()

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    def _route(self, *, head: bool) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        query = parse_qs(url.query)
        with self.hub._lock:
            self.hub.requests.append((self.command, path, self.headers.get("Range")))
        if path == "/api/models":
            self._search(query)
        elif match := _INFO.match(path):
            self._info(match["repo"], match["rev"], "true" in query.get("blobs", []))
        elif match := _RESOLVE.match(path):
            self._resolve(match["repo"], unquote(match["rev"]), match["path"], head=head)
        elif match := _CDN.match(path):
            self._cdn(match["sha"], head=head)
        else:
            self._error(404, "EntryNotFound", "Not found")

    def _json(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, code: str, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _search(self, query: dict[str, list[str]]) -> None:
        words = [w.lower() for w in query.get("search", [])]
        filters = query.get("filter", [])
        limit = int(query.get("limit", ["1000"])[0])
        found = [
            self.hub.list_entry(repo)
            for repo in self.hub.repos.values()
            if all(w in repo.id.lower() for w in words)
            and all(f in self.hub.list_entry(repo)["tags"] for f in filters)
        ]
        found.sort(key=lambda e: -e["downloads"])
        self._json(200, found[:limit])

    def _repo(self, repo_id: str, revision: str | None) -> HubRepo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
            return None
        if revision not in (None, "main", repo.commit):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return None
        return repo

    def _info(self, repo_id: str, revision: str | None, blobs: bool) -> None:
        repo = self._repo(repo_id, unquote(revision) if revision else None)
        if repo is not None:
            self._json(200, self.hub.model_info(repo, blobs))

    def _resolve(self, repo_id: str, revision: str, path: str, *, head: bool) -> None:
        repo = self._repo(repo_id, revision)
        if repo is None:
            return
        if repo.gated:
            auth = self.headers.get("Authorization", "")
            if not auth:
                self._error(401, "GatedRepo", f"Access to model {repo_id} is restricted.")
                return
            if auth.removeprefix("Bearer ") not in repo.granted_tokens:
                self._error(403, "GatedRepo", f"Access to model {repo_id} is not granted.")
                return
        file = repo.files.get(path)
        if file is None:
            self._error(404, "EntryNotFound", f"{path} does not exist on main")
            return
        if not file.lfs:
            self._send_file(file, head=head, extra={"ETag": f'"{file.blob_id}"',
                                                    "X-Repo-Commit": repo.commit})  # fmt: skip
            return
        self.send_response(302)
        self.send_header("Location", f"{self.hub.url}/cdn/{file.sha256}")
        self.send_header("X-Repo-Commit", repo.commit)
        self.send_header("X-Linked-Etag", f'"{file.sha256}"')
        self.send_header("X-Linked-Size", str(file.size))
        self.send_header("ETag", f'"{file.blob_id}"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _cdn(self, sha: str, *, head: bool) -> None:
        file = next(
            (f for r in self.hub.repos.values() for f in r.files.values() if f.sha256 == sha),
            None,
        )
        if file is None:
            self._error(404, "EntryNotFound", "No such object")
            return
        self._send_file(file, head=head, extra={"ETag": f'"{sha}"'})

    def _send_file(self, file: HubFile, *, head: bool, extra: dict[str, str]) -> None:
        fault = self.hub.faults.get(file.sha256)
        start, end = 0, file.size
        wanted = self.headers.get("Range")
        partial = False
        if wanted and not (fault and fault.ignore_range):
            match = _RANGE.match(wanted)
            if match is None or int(match[1]) >= file.size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{file.size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start = int(match[1])
            end = min(file.size, int(match[2]) + 1) if match[2] else file.size
            partial = True
        self.send_response(206 if partial else 200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        if partial:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{file.size}")
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        if head:
            return
        if fault is None and isinstance(file.source, Path):
            self._sendfile(file, start, end)
        else:
            self._send_with_faults(file, start, end, fault)

    def _count(self, file: HubFile, sent: int) -> None:
        with self.hub._lock:
            self.hub.served[file.sha256] += sent

    def _sendfile(self, file: HubFile, start: int, end: int) -> None:
        assert isinstance(file.source, Path)
        self.wfile.flush()
        rate = self.hub.bytes_per_second
        step = end - start if rate is None else 1024 * 1024
        began = time.monotonic()
        with file.source.open("rb") as handle:
            for offset in range(start, end, step):
                try:
                    sent = self.connection.sendfile(handle, offset, min(step, end - offset))
                except OSError:
                    return  # the client went away
                self._count(file, sent)
                if rate is not None:  # keep the average at the rate asked for
                    ahead = (offset + sent - start) / rate - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)

    def _send_with_faults(self, file: HubFile, start: int, end: int, fault: Fault | None) -> None:
        offset = start
        for block in file.blocks(start, end):
            data = bytearray(block)
            here = range(offset, offset + len(data))
            if fault is not None and fault.corrupt_at in here:
                data[fault.corrupt_at - offset] ^= 0xFF
            if (
                fault is not None
                and fault.trickle_after is not None
                and here.stop > fault.trickle_after
            ):
                self._trickle(file, bytes(data), max(0, fault.trickle_after - offset), fault)
                return
            cut = self._cut_in(fault, here)
            if cut is not None:
                assert fault is not None
                self._write(file, bytes(data[: cut - offset]))
                with self.hub._lock:
                    fault.times -= 1
                if cut == fault.stall_at:
                    self.hub._stop.wait(fault.stall_seconds)
                self._hang_up()
                return
            if not self._write(file, bytes(data)):
                return
            offset += len(data)

    def _trickle(self, file: HubFile, data: bytes, split: int, fault: Fault) -> None:
        if not self._write(file, data[:split]):
            return
        piece = 16
        for index in range(split, len(data), piece):
            if self.hub._stop.wait(piece / fault.trickle_bytes_per_second):
                return
            if not self._write(file, data[index : index + piece]):
                return
        self._hang_up()  # the rest of the file would take an age: the test is over

    @staticmethod
    def _cut_in(fault: Fault | None, here: range) -> int | None:
        """The offset in this block where a drop or a stall happens, if one does."""
        if fault is None or fault.times <= 0:
            return None
        for at in (fault.drop_at, fault.stall_at):
            if at is not None and at in here:
                return at
        return None

    def _write(self, file: HubFile, data: bytes) -> bool:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            self.close_connection = True
            return False
        self._count(file, len(data))
        return True

    def _hang_up(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


def serve(argv: list[str]) -> None:
    """Run the emulator as its own process (for the download benchmark, so that the
    server does not share the client's interpreter). Serves one file as one repo:

        python -m tests.core.hub.hub_emulator REPO FILE_PATH

    prints its URL, then reads commands on stdin, one per line, answering each:
    `drop OFFSET` (cut the next transfer there), `served` (body bytes sent so far),
    `pace BYTES_PER_SECOND` (0: unpaced).
    """
    repo, file = argv
    source = Path(file)
    hub = HubEmulator()
    hub.add_repo(repo, {source.name: source})
    print(hub.url, flush=True)
    for line in sys.stdin:
        command, *args = line.split()
        if command == "drop":
            hub.inject(repo, source.name, Fault(drop_at=int(args[0])))
            print("ok", flush=True)
        elif command == "served":
            print(hub.served_for(repo, source.name), flush=True)
        elif command == "pace":  # bytes per second; 0 for as fast as it goes
            hub.bytes_per_second = float(args[0]) or None
            print("ok", flush=True)
        else:
            break
    hub.shutdown()


if __name__ == "__main__":
    serve(sys.argv[1:])
