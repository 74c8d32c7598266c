"""Real processes for fault tests: an `mlflow server` on loopback, free ports, this test's own Ray processes."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """`mlflow server` on 127.0.0.1 over a sqlite store, in its own session so that killing its process group
    takes its workers with it (a plain SIGTERM to the parent leaves huey consumers behind)."""

    def __init__(self, db: Path, port: int | None = None):
        self.db, self.port, self.proc = db, port or free_port(), None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> "MlflowServer":
        self.proc = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--backend-store-uri", f"sqlite:///{self.db}", "--workers", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                urllib.request.urlopen(self.url + "/health", timeout=2)
                return self
            except OSError:
                assert self.proc.poll() is None, "mlflow server exited"
                time.sleep(0.3)
        self.kill()
        raise TimeoutError(f"mlflow server on {self.url} did not answer /health in {timeout} s")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)

    def __enter__(self) -> "MlflowServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill(signal.SIGTERM)


def own_processes(title: str, root: int | None = None) -> list[psutil.Process]:
    """Live descendants of ``root`` (this process) whose command line contains ``title`` (Ray sets worker
    titles such as ``ray::RayTrainWorker``): never another user's processes."""
    out = []
    for p in psutil.Process(root or os.getpid()).children(recursive=True):
        try:
            if title in " ".join(p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:                 # exited while we looked
            pass
    return out
