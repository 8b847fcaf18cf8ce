"""``onerec serve`` in a child process on a free loopback port: what the load benchmark and the
tests run against (a real server, a real network stack, its own interpreter and GIL)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """Start ``onerec serve RUN ARGS`` on 127.0.0.1 and wait (at most ``start_seconds``) until
    /readyz answers 200; ``stop()`` ends it. ``admin_token``: the ``ONEREC_ADMIN_TOKEN`` it gets
    (None: admin calls disabled). Its output goes to ``log`` (default: beside the run folder)."""

    def __init__(
        self,
        run: str | Path,
        *args: str,
        admin_token: str | None = None,
        log: str | Path | None = None,
        start_seconds: float = 60.0,
    ) -> None:
        run = Path(run)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        env.pop("ONEREC_ADMIN_TOKEN", None)
        if admin_token is not None:
            env["ONEREC_ADMIN_TOKEN"] = admin_token
        self.log = Path(log) if log else run.parent / f"serve-{self.port}.log"
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "onerec.cli", "serve", str(run), "--host", "127.0.0.1",
                 "--port", str(self.port), *args],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + start_seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}:\n"
                                   f"{self.log.read_text()}")  # fmt: skip
            if self._ready():
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server was not ready after {start_seconds}s:\n"
                           f"{self.log.read_text()}")  # fmt: skip

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/readyz", timeout=2) as r:
                return r.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def rss_bytes(self) -> int:
        """The server's resident memory (Linux /proc; 0 elsewhere)."""
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def stop(self) -> None:
        """SIGINT (uvicorn's graceful stop), then kill if it does not end in 15 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
