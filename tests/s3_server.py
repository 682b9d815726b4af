"""A real S3 API on loopback: moto's server mode behind a fault-injecting HTTP proxy.

``LoopbackS3`` starts ``moto.server.ThreadedMotoServer`` on 127.0.0.1 (a free port) and a small proxy in front of
it, also on 127.0.0.1. Clients (s3fs, boto3, zarr's ``FsspecStore``) talk to the proxy (``endpoint``); the proxy
forwards every request unchanged (headers included, so SigV4 signatures stay valid) and can inject faults into the
requests whose method is in ``fault_methods`` (GET and PUT by default):

- every ``fail_every``-th one is answered ``503 SlowDown`` (the request is not forwarded);
- every ``cut_every``-th one loses its body in the middle and the connection is closed: a GET's response body is
  cut after half its bytes, a PUT's request body is read half-way and dropped (moto never sees it);
- every PUT to a key containing ``refuse`` is answered 503 (a write that fails whatever the retries);
- every PUT waits ``put_delay_s`` first (a slow upload, to kill a converter in the middle of it).

Counters per object key (``bucket/key``): requests (``requests``), response body bytes sent (``sent``) and request
body bytes received (``received``). ``restricted`` turns on moto's IAM checks and yields keys of a user allowed on
one bucket only, for "bucket without permission" cases (a real AccessDenied from moto, not a stub).

Use ``storage_options`` for s3fs / fsspec, or ``env`` (``AWS_ENDPOINT_URL_S3`` and fake keys) for subprocesses.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import unquote, urlsplit

from .hub_server import QuietHTTPServer

REGION = "us-east-1"
FAKE_KEY, FAKE_SECRET = "testing-key", "testing-secret"
_HOP_HEADERS = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}


class LoopbackS3:
    """moto's S3 server plus a fault-injecting proxy, both on 127.0.0.1.

    Parameters
    ----------
    fail_every
        Answer every Nth faultable request 503 (0: never).
    cut_every
        Cut the body of every Nth faultable request mid-way and close the connection (0: never).
    fault_methods
        The HTTP methods faults are injected into.
    own_process
        Run moto in a child process rather than a thread of this one (benchmarks: its CPU then does not share this
        process's GIL with the proxy and the caller).
    """

    def __init__(
        self, *, fail_every: int = 0, cut_every: int = 0, fault_methods: tuple[str, ...] = ("GET", "PUT"),
        own_process: bool = False,
    ) -> None:  # fmt: skip
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
        self.fail_every, self.cut_every, self.fault_methods = fail_every, cut_every, fault_methods
        self.refuse = ""  # every PUT to a key containing this (non-empty) text is answered 503: a write that fails
        self.put_delay_s = 0.0  # each PUT waits this long before being forwarded (to kill a converter mid-upload)
        self.lose_reply = ""  # the next PUT to a key containing this reaches moto, but its reply is lost
        self.faults = {"503": 0, "cut": 0}
        self.log: list[tuple[str, str, int, int]] = []  # (method, bucket/key, bytes received, bytes sent)
        self._count = 0
        self._lock = threading.Lock()
        moto_server = _MotoProcess if own_process else ThreadedMotoServer
        self._moto = moto_server(ip_address="127.0.0.1", port=_free_port(), verbose=False)
        self._proxy = QuietHTTPServer(("127.0.0.1", 0), _handler(self))
        self._proxy.daemon_threads = True
        self._thread = threading.Thread(target=self._proxy.serve_forever, daemon=True)

    # ------------------------------------------------------------------ lifecycle and addresses

    def __enter__(self) -> LoopbackS3:
        self._moto.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._proxy.shutdown()
        self._proxy.server_close()
        self._moto.stop()

    @property
    def endpoint(self) -> str:
        """The proxy's URL (what clients use)."""
        host, port = self._proxy.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def moto_address(self) -> tuple[str, int]:
        return self._moto.get_host_and_port()

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by this process (the proxy's threads, and moto's unless ``own_process``) and by
        moto's own process: the server's CPU while the caller only waits (a benchmark's driver)."""
        own = self._moto.cpu_seconds() if isinstance(self._moto, _MotoProcess) else 0.0  # else in process_time
        return time.process_time() + own

    def storage_options(self, key: str = FAKE_KEY, secret: str = FAKE_SECRET) -> dict[str, Any]:
        """s3fs keyword arguments reaching this server (path-style addressing, fake credentials)."""
        return {
            "key": key,
            "secret": secret,
            "client_kwargs": {"endpoint_url": self.endpoint, "region_name": REGION},
            "config_kwargs": {"s3": {"addressing_style": "path"}},
        }

    def env(self, key: str = FAKE_KEY, secret: str = FAKE_SECRET) -> dict[str, str]:
        """Environment variables pointing botocore (hence s3fs) at this server, for subprocesses."""
        return {
            "AWS_ACCESS_KEY_ID": key,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self, key: str = FAKE_KEY, secret: str = FAKE_SECRET) -> Any:
        """A boto3 client talking to moto directly (no faults, not logged): test set-up and inspection."""
        import boto3

        host, port = self.moto_address
        return boto3.client(
            "s3", endpoint_url=f"http://{host}:{port}", region_name=REGION,
            aws_access_key_id=key, aws_secret_access_key=secret,
        )  # fmt: skip

    def new_bucket(self, prefix: str = "hest") -> str:
        """Create a bucket with a fresh name and return the name."""
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.client().create_bucket(Bucket=name)
        return name

    def objects(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        """Every object under ``prefix`` (key -> content), read from moto directly."""
        client, out = self.client(), {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for entry in page.get("Contents", []):
                out[entry["Key"]] = client.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read()
        return out

    # ------------------------------------------------------------------ faults and counters

    def set_faults(
        self,
        *,
        fail_every: int = 0,
        cut_every: int = 0,
        methods: tuple[str, ...] = ("GET", "PUT"),
        refuse: str = "",
        put_delay_s: float = 0.0,
        lose_reply: str = "",
    ) -> None:
        """Change the fault injection (and restart its request count); no argument: no faults.

        ``lose_reply``: the next PUT to a key containing it reaches moto, but its reply is lost (connection closed).
        """
        with self._lock:
            self.fail_every, self.cut_every, self.fault_methods = fail_every, cut_every, methods
            self.refuse, self.put_delay_s, self.lose_reply = refuse, put_delay_s, lose_reply
            self._count = 0

    def next_fault(self, method: str, key: str = "") -> str | None:
        """The fault to inject into the next request of ``method`` to ``key``, if any."""
        if method == "PUT" and self.refuse and self.refuse in key:
            with self._lock:
                self.faults["503"] += 1
            return "503"
        if method == "PUT" and self.lose_reply and self.lose_reply in key:
            with self._lock:
                self.lose_reply = ""  # once
                self.faults["lost"] = self.faults.get("lost", 0) + 1
            return "lost"
        if method not in self.fault_methods:
            return None
        with self._lock:
            self._count += 1
            n, fault = self._count, None
            if self.fail_every and n % self.fail_every == 0:
                fault = "503"
            elif self.cut_every and n % self.cut_every == 0:
                fault = "cut"
            if fault:
                self.faults[fault] += 1
            return fault

    def record(self, method: str, key: str, received: int, sent: int) -> None:
        with self._lock:
            self.log.append((method, key, received, sent))

    def reset_log(self) -> None:
        """Forget the requests and byte counts so far."""
        with self._lock:
            self.log.clear()
            self.faults = {"503": 0, "cut": 0}

    def requests(self, prefix: str = "", method: str | None = None) -> int:
        """Requests to keys starting with ``prefix`` (``bucket/key``), of one method or all."""
        with self._lock:
            return sum(1 for m, k, _, _ in self.log if k.startswith(prefix) and method in (None, m))

    def sent(self, prefix: str = "") -> int:
        """Response body bytes sent for keys starting with ``prefix``."""
        with self._lock:
            return sum(n for _, k, _, n in self.log if k.startswith(prefix))

    def received(self, prefix: str = "") -> int:
        """Request body bytes received for keys starting with ``prefix``."""
        with self._lock:
            return sum(n for _, k, n, _ in self.log if k.startswith(prefix))

    def per_key(self) -> dict[str, dict[str, int]]:
        """``bucket/key`` -> {"requests", "sent", "received"}."""
        out: dict[str, dict[str, int]] = {}
        with self._lock:
            for _, key, received, sent in self.log:
                entry = out.setdefault(key, {"requests": 0, "sent": 0, "received": 0})
                entry["requests"] += 1
                entry["sent"] += sent
                entry["received"] += received
        return out

    # ------------------------------------------------------------------ permissions

    @contextlib.contextmanager
    def restricted(self, bucket: str) -> Iterator[tuple[str, str]]:
        """Turn on moto's IAM checks; yield (key, secret) of a user allowed only on ``bucket``.

        Requests signed with other keys (the fake default ones included) are refused while this is active.
        """
        import boto3

        host, port = self.moto_address
        iam = boto3.client(
            "iam", endpoint_url=f"http://{host}:{port}", region_name=REGION,
            aws_access_key_id=FAKE_KEY, aws_secret_access_key=FAKE_SECRET,
        )  # fmt: skip
        user = f"only-{bucket}"[:60]
        iam.create_user(UserName=user)
        arns = [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": arns}]}
        iam.put_user_policy(UserName=user, PolicyName="one-bucket", PolicyDocument=json.dumps(policy))
        keys = iam.create_access_key(UserName=user)["AccessKey"]
        self._moto_post("/moto-api/reset-auth", b"0")
        try:
            yield keys["AccessKeyId"], keys["SecretAccessKey"]
        finally:
            self._moto_post("/moto-api/reset-auth", b"inf")

    def _moto_post(self, path: str, body: bytes) -> None:
        conn = http.client.HTTPConnection(*self.moto_address, timeout=30)
        try:
            conn.request("POST", path, body=body)
            conn.getresponse().read()
        finally:
            conn.close()


def _handler(s3: LoopbackS3) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet test output

        def do_GET(self) -> None:
            self._forward("GET")

        def do_HEAD(self) -> None:
            self._forward("HEAD")

        def do_PUT(self) -> None:
            self._forward("PUT")

        def do_POST(self) -> None:
            self._forward("POST")

        def do_DELETE(self) -> None:
            self._forward("DELETE")

        def _forward(self, method: str) -> None:
            key = unquote(urlsplit(self.path).path).lstrip("/")
            if method == "PUT" and s3.put_delay_s:
                time.sleep(s3.put_delay_s)
            fault = s3.next_fault(method, key)
            if fault == "cut" and method != "GET":  # the upload dies half-way: moto never sees it
                self._read_body(half=True)
                s3.record(method, key, 0, 0)
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            body = self._read_body()
            if fault == "lost":  # done by moto, but the client never hears of it
                self._ask_moto(method, body)
                s3.record(method, key, len(body), 0)
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if fault == "503":
                s3.record(method, key, len(body), 0)
                self._slow_down()
                return
            status, reason, headers, payload = self._ask_moto(method, body)
            self.send_response(status, reason)
            for name, value in headers:  # a HEAD keeps moto's Content-Length (the object's size)
                if name.lower() not in _HOP_HEADERS and (method == "HEAD" or name.lower() != "content-length"):
                    self.send_header(name, value)
            if method != "HEAD":
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if method == "HEAD":
                payload = b""
            elif fault == "cut":  # half the body, then the connection drops
                payload = payload[: len(payload) // 2]
                self.close_connection = True
            self.wfile.write(payload)
            self.wfile.flush()
            s3.record(method, key, len(body), len(payload))

        def _read_body(self, half: bool = False) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                return self._read_chunked()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length // 2 if half else length)

        def _read_chunked(self) -> bytes:
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()

        def _ask_moto(self, method: str, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
            conn = http.client.HTTPConnection(*s3.moto_address, timeout=120)
            try:
                conn.putrequest(method, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in self.headers.items():  # Host unchanged: the SigV4 signature covers it
                    if name.lower() not in _HOP_HEADERS and name.lower() != "content-length":
                        conn.putheader(name, value)
                conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body)
                response = conn.getresponse()
                payload = response.read()
                return response.status, response.reason, response.getheaders(), payload
            finally:
                conn.close()

        def _slow_down(self) -> None:
            body = (
                b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
                b"<Message>Please reduce your request rate (injected).</Message></Error>"
            )
            self.send_response(503, "Slow Down")
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    return Handler


class _MotoProcess:
    """``ThreadedMotoServer``'s interface over a moto server running in a child Python process."""

    def __init__(self, ip_address: str, port: int, verbose: bool = False) -> None:
        self.address = (ip_address, port)
        self._process: Any = None

    def start(self) -> None:
        import subprocess
        import sys

        code = (
            "import logging, threading; from moto.server import ThreadedMotoServer; "
            "logging.getLogger('werkzeug').setLevel(logging.ERROR); "
            f"ThreadedMotoServer(ip_address={self.address[0]!r}, port={self.address[1]}, verbose=False).start(); "
            "threading.Event().wait()"
        )
        self._process = subprocess.Popen([sys.executable, "-c", code])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(self.address, timeout=1):
                return
            if self._process.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto's server did not start on {self.address}")

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()

    def get_host_and_port(self) -> tuple[str, int]:
        return self.address

    def cpu_seconds(self) -> float:
        """User and system CPU seconds of the child process so far (``/proc/PID/stat``)."""
        with open(f"/proc/{self._process.pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Bucket:
    """One bucket of a ``LoopbackS3`` server, as a test sees it."""

    def __init__(self, server: LoopbackS3, name: str) -> None:
        self.server, self.name = server, name

    def url(self, *parts: str) -> str:
        """``s3://bucket/part/...``."""
        return "/".join([f"s3://{self.name}", *(p.strip("/") for p in parts if p)])

    @property
    def storage_options(self) -> dict[str, Any]:
        return self.server.storage_options()

    def objects(self, prefix: str = "") -> dict[str, bytes]:
        return self.server.objects(self.name, prefix)

    def keys(self, prefix: str = "") -> list[str]:
        """The object keys under ``prefix`` (a listing, from moto directly)."""
        pages = self.server.client().get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix)
        return [entry["Key"] for page in pages for entry in page.get("Contents", [])]
