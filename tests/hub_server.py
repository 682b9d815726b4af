"""A loopback stand-in for the Hugging Face Hub, enough for huggingface_hub's downloads of one dataset repo.

It answers the routes the installed huggingface_hub (2.4) calls (read in ``hf_api.py``, ``file_download.py`` and
``_snapshot_download.py``):

- ``GET /api/datasets/{repo}`` and ``GET /api/datasets/{repo}/revision/{rev}``: repo info with its commit ``sha``;
- ``GET /api/datasets/{repo}/auth-check``: 200, or the gated refusal;
- ``GET /api/datasets/{repo}/tree/{rev}[/{folder}]?recursive=...``: the file listing (one page);
- ``POST /api/datasets/{repo}/paths-info/{rev}`` (form ``paths=...``): the entries of the paths that exist;
- ``HEAD`` / ``GET /datasets/{repo}/resolve/{rev}/{path}``: the file, with ``X-Repo-Commit``, ``ETag`` and
  ``Content-Length``; ``Range: bytes=a-b`` / ``bytes=a-`` answered with 206 and ``Content-Range``.

Bytes of file content sent are counted per repo path (``server.sent``). Faults can be injected into file
transfers (``GET .../resolve/...``): every Nth answered 503 (``fail_every``), every Nth body cut in the middle with
the connection closed (``cut_every``), every Nth answer delayed by ``delay_s`` (``slow_every``; 0: every answer).

Model repos (an encoder's weights) can be served too (``models``: repo id -> folder): ``HEAD`` / ``GET
/{repo}/resolve/{rev}/{path}``, as ``hf_hub_download`` asks for a model file; those in ``gated_models`` are refused.

In gated mode it answers downloads and the auth check like the hub does for a gated repo whose terms the user has
not accepted: 401 without a token, 403 with one, both with ``X-Error-Code: GatedRepo``. Point huggingface_hub at it
with ``HF_ENDPOINT=server.endpoint``. Every request is recorded in ``server.requests``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

REPO_ID = "MahmoodLab/hest"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
GATED_MESSAGE = (
    f"Access to dataset {REPO_ID} is restricted and you are not in the authorized list. "
    f"Visit https://huggingface.co/datasets/{REPO_ID} to ask for access."
)


class FakeHub:
    """A dataset repo served on 127.0.0.1 from a local folder (its files are the repo's files).

    Parameters
    ----------
    root
        Folder whose files (recursively; hidden ones excepted) make up the repo.
    gated
        Refuse downloads and the auth check like the hub does for a gated repo not accepted yet.
    models
        Model repos served besides the dataset: repo id -> folder of its files.
    gated_models
        Model repos whose file downloads are refused as gated (401 without a token, 403 with one).
    """

    def __init__(
        self,
        root: Path,
        *,
        gated: bool = False,
        fail_every: int = 0,
        cut_every: int = 0,
        slow_every: int = 0,
        delay_s: float = 0.0,
        models: dict[str, Path] | None = None,
        gated_models: frozenset[str] = frozenset(),
    ) -> None:
        self.root = Path(root)
        self.gated = gated
        self.models = {repo: Path(folder) for repo, folder in (models or {}).items()}
        self.gated_models = gated_models
        self.fail_every, self.cut_every, self.slow_every, self.delay_s = fail_every, cut_every, slow_every, delay_s
        self.requests: list[tuple[str, str]] = []
        self.ranges: list[tuple[str, int, int]] = []  # (repo path, first byte, bytes sent) of each file GET
        self.faults = {"503": 0, "cut": 0, "slow": 0}
        self._transfers = 0
        self._lock = threading.Lock()
        self._server = QuietHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def files(self) -> dict[str, Path]:
        """Repo path -> local file."""
        return {
            p.relative_to(self.root).as_posix(): p
            for p in sorted(self.root.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(self.root).parts)
        }

    def downloads(self) -> list[str]:
        """Repo paths fetched with GET (file contents actually transferred)."""
        fetched = (re.match(r"^/datasets/.+?/resolve/[^/]+/(.+)$", path) for m, path in self.requests if m == "GET")
        return [match[1] for match in fetched if match]

    def record(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((method, path))

    def sent(self, path: str | None = None) -> int:
        """Bytes of file content sent (of one repo path, or all)."""
        with self._lock:
            return sum(n for name, _, n in self.ranges if path is None or name == path)

    def file_requests(self, path: str | None = None) -> int:
        """File GET requests answered with content (of one repo path, or all)."""
        with self._lock:
            return sum(1 for name, _, _ in self.ranges if path is None or name == path)

    def reset_log(self) -> None:
        """Forget the requests and bytes sent so far."""
        with self._lock:
            self.requests.clear()
            self.ranges.clear()

    def next_fault(self) -> str | None:
        """The fault to inject into the next file transfer, if any."""
        with self._lock:
            self._transfers += 1
            n = self._transfers
            fault = None
            if self.fail_every and n % self.fail_every == 0:
                fault = "503"
            elif self.cut_every and n % self.cut_every == 0:
                fault = "cut"
            elif self.delay_s and (not self.slow_every or n % self.slow_every == 0):
                fault = "slow"
            if fault:
                self.faults[fault] += 1
            return fault


class QuietHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that does not report clients hanging up (expected with timeouts and cut bodies)."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):  # a client that timed out and hung up: expected
            return
        super().handle_error(request, client_address)


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    api = re.compile(rf"^/api/datasets/{re.escape(REPO_ID)}(?:/revision/(?P<rev>[^/]+))?$")
    auth = re.compile(rf"^/api/datasets/{re.escape(REPO_ID)}/auth-check$")
    tree = re.compile(rf"^/api/datasets/{re.escape(REPO_ID)}/tree/(?P<rev>[^/]+)(?:/(?P<folder>.+))?$")
    paths_info = re.compile(rf"^/api/datasets/{re.escape(REPO_ID)}/paths-info/(?P<rev>[^/]+)$")
    resolve = re.compile(rf"^/datasets/{re.escape(REPO_ID)}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
    model_resolve = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet test output

        def do_HEAD(self) -> None:
            self._route("HEAD")

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            path = unquote(url.path)
            hub.record("POST", path)
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode())
            m = paths_info.match(path)
            if m is None:
                self._error(404, "RepoNotFound", "Repository not found")
            elif hub.gated and not self.headers.get("Authorization"):
                self._gated()
            elif self._revision_ok(m["rev"]):
                files = hub.files()
                wanted = [p for p in form.get("paths", []) if p in files]
                self._json([_file_entry(p, files[p]) for p in wanted])

        def _route(self, method: str) -> None:
            url = urlsplit(self.path)
            path = unquote(url.path)
            hub.record(method, path)
            if m := resolve.match(path):
                self._resolve(method, m["rev"], m["path"])
            elif (m := model_resolve.match(path)) and m["repo"] in hub.models:
                self._resolve_model(method, m["repo"], m["rev"], m["path"])
            elif method != "GET":
                self._error(405, "MethodNotAllowed", "method not allowed")
            elif auth.match(path):
                self._gated() if hub.gated else self._json({"ok": True})
            elif m := tree.match(path):
                self._tree(m["rev"], m["folder"], parse_qs(url.query))
            elif m := api.match(path):
                self._info(m["rev"])
            else:
                self._error(404, "RepoNotFound", "Repository not found")

        def _revision_ok(self, rev: str) -> bool:
            if rev in ("main", COMMIT):
                return True
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return False

        def _info(self, rev: str | None) -> None:
            if rev is not None and not self._revision_ok(rev):
                return
            self._json(
                {
                    "id": REPO_ID,
                    "author": REPO_ID.split("/")[0],
                    "sha": COMMIT,
                    "private": False,
                    "gated": "manual",
                    "disabled": False,
                    "lastModified": "2026-02-08T00:00:00.000Z",
                    "siblings": [{"rfilename": name} for name in hub.files()],
                    "tags": [],
                }
            )

        def _tree(self, rev: str, folder: str | None, query: dict[str, list[str]]) -> None:
            if not self._revision_ok(rev):
                return
            recursive = query.get("recursive", ["false"])[0].lower() == "true"
            prefix = f"{folder.strip('/')}/" if folder else ""
            entries, folders = [], set()
            for name, local in hub.files().items():
                if not name.startswith(prefix):
                    continue
                rest = name[len(prefix) :]
                if "/" in rest and not recursive:
                    folders.add(prefix + rest.split("/", 1)[0])
                    continue
                if recursive:
                    parts = rest.split("/")[:-1]
                    folders.update(prefix + "/".join(parts[: i + 1]) for i in range(len(parts)))
                entries.append(_file_entry(name, local))
            listing = [
                {"type": "directory", "path": f, "oid": hashlib.sha1(f.encode()).hexdigest()} for f in sorted(folders)
            ]
            self._json(listing + entries)

        def _resolve(self, method: str, rev: str, name: str) -> None:
            local = hub.files().get(name)
            if hub.gated:
                self._gated()
            elif not self._revision_ok(rev):
                pass
            elif local is None:
                self._error(404, "EntryNotFound", f"{name} does not exist on {rev}")
            else:
                self._send_file(method, name, local)

        def _resolve_model(self, method: str, repo: str, rev: str, name: str) -> None:
            local = hub.models[repo] / name
            if repo in hub.gated_models:
                status = 403 if self.headers.get("Authorization") else 401
                self._error(status, "GatedRepo", f"Access to model {repo} is restricted. Visit /{repo} to ask for it.")
            elif not self._revision_ok(rev):
                pass
            elif not local.is_file():
                self._error(404, "EntryNotFound", f"{name} does not exist on {rev}")
            else:
                self._send_file(method, f"{repo}/{name}", local)

        def _send_file(self, method: str, name: str, local: Path) -> None:
            fault = hub.next_fault() if method == "GET" else None
            if fault == "slow":
                time.sleep(hub.delay_s)
            if fault == "503":
                self._error(503, "ServiceUnavailable", "injected 503")
                return
            header = self.headers.get("Range")
            size = local.stat().st_size
            start, end = _range(header, size)
            status = 206 if header else 200
            with local.open("rb") as file:  # only the range: slides in benchmarks are hundreds of MB
                file.seek(start)
                body = file.read(end - start)
            self.send_response(status)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{_sha1(local)}"')
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            if header:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
            self.end_headers()
            if method != "GET":
                return
            if fault == "cut":  # half the body, then the connection drops
                body = body[: len(body) // 2]
                self.close_connection = True
            self.wfile.write(body)
            with hub._lock:
                hub.ranges.append((name, start, len(body)))

        def _gated(self) -> None:
            status = 403 if self.headers.get("Authorization") else 401
            self._error(status, "GatedRepo", GATED_MESSAGE)

        def _json(self, payload: Any) -> None:
            body = json.dumps(payload).encode()
            self.send_response(200)
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

    return Handler


def _file_entry(name: str, local: Path) -> dict[str, Any]:
    return {"type": "file", "path": name, "size": local.stat().st_size, "oid": _sha1(local)}


def _sha1(path: Path) -> str:
    stat = path.stat()
    return _digest(path, stat.st_size, stat.st_mtime_ns)


@functools.cache
def _digest(path: Path, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha1()
    with path.open("rb") as file:
        while chunk := file.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _range(header: str | None, size: int) -> tuple[int, int]:
    """``[start, end)`` asked for by a ``Range: bytes=a-[b]`` header (the whole file without one)."""
    m = re.fullmatch(r"bytes=(\d+)-(\d*)", header or "")
    if m is None:
        return 0, size
    return int(m[1]), min(size, int(m[2]) + 1) if m[2] else size
