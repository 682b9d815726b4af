"""A loopback stand-in for the Hugging Face Hub, enough for huggingface_hub's downloads of one dataset repo.

It answers the routes the installed huggingface_hub (2.4) calls (read in ``hf_api.py``, ``file_download.py`` and
``_snapshot_download.py``):

- ``GET /api/datasets/{repo}`` and ``GET /api/datasets/{repo}/revision/{rev}``: repo info with its commit ``sha``;
- ``GET /api/datasets/{repo}/auth-check``: 200, or the gated refusal;
- ``GET /api/datasets/{repo}/tree/{rev}[/{folder}]?recursive=...``: the file listing (one page);
- ``HEAD`` / ``GET /datasets/{repo}/resolve/{rev}/{path}``: the file, with ``X-Repo-Commit``, ``ETag`` and
  ``Content-Length`` (``Range`` honoured, for resumed downloads).

In gated mode it answers downloads and the auth check like the hub does for a gated repo whose terms the user has
not accepted: 401 without a token, 403 with one, both with ``X-Error-Code: GatedRepo``. Point huggingface_hub at it
with ``HF_ENDPOINT=server.endpoint``. Every request is recorded in ``server.requests``.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
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
    """

    def __init__(self, root: Path, *, gated: bool = False) -> None:
        self.root = Path(root)
        self.gated = gated
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
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


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    api = re.compile(rf"^/api/datasets/{re.escape(REPO_ID)}(?:/revision/(?P<rev>[^/]+))?$")
    auth = re.compile(rf"^/api/datasets/{re.escape(REPO_ID)}/auth-check$")
    tree = re.compile(rf"^/api/datasets/{re.escape(REPO_ID)}/tree/(?P<rev>[^/]+)(?:/(?P<folder>.+))?$")
    resolve = re.compile(rf"^/datasets/{re.escape(REPO_ID)}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet test output

        def do_HEAD(self) -> None:
            self._route("HEAD")

        def do_GET(self) -> None:
            self._route("GET")

        def _route(self, method: str) -> None:
            url = urlsplit(self.path)
            path = unquote(url.path)
            hub.record(method, path)
            if m := resolve.match(path):
                self._resolve(method, m["rev"], m["path"])
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
                entries.append({"type": "file", "path": name, "size": local.stat().st_size, "oid": _sha1(local)})
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
                self._send_file(method, local.read_bytes())

        def _send_file(self, method: str, data: bytes) -> None:
            start = _range_start(self.headers.get("Range"))
            status = 206 if start else 200
            body = data[start:]
            self.send_response(status)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if method == "GET":
                self.wfile.write(body)

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


def _sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def _range_start(header: str | None) -> int:
    m = re.fullmatch(r"bytes=(\d+)-", header or "")
    return int(m[1]) if m else 0
