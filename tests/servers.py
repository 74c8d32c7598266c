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


def wait_for(condition, timeout: float, poll: float = 0.2) -> bool:
    """Whether ``condition()`` held within ``timeout`` s (checked every ``poll`` s)."""
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            return False
        time.sleep(poll)
    return True


def wait_until_up(server, url: str, timeout: float, what: str):
    """``server`` once ``url`` answers; its process exiting, or no answer within ``timeout`` s, fails."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return server
        except OSError:
            assert server.proc.poll() is None, f"{what} exited"
            time.sleep(0.2)
    server.kill()
    raise TimeoutError(f"{what} on {url} did not answer in {timeout} s")


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
            # no job runner (MLflow's scheduled server-side jobs, which nothing here uses): ~2.5 s less per start,
            # and no periodic tasks taking CPU from the test
            env=dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        return wait_until_up(self, self.url + "/health", timeout, "mlflow server")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)

    def __enter__(self) -> "MlflowServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill(signal.SIGTERM)


class S3Server:
    """moto's S3-compatible server on 127.0.0.1 (in memory), and the URI query that points pyarrow at it."""

    def __init__(self, port: int | None = None):
        self.port, self.proc = port or free_port(), None
        self.url = f"http://127.0.0.1:{self.port}"
        # pyarrow's S3 options in the URI itself (keys in its user part): Ray's workers need no environment
        self.query = f"endpoint_override=127.0.0.1:{self.port}&scheme=http&region=us-east-1"

    def uri(self, path: str) -> str:
        return f"s3://test:test@{path}?{self.query}"

    def start(self, timeout: float = 60) -> "S3Server":
        self.proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        return wait_until_up(self, self.url, timeout, "moto_server")

    def filesystem(self):
        import pyarrow.fs as pafs
        return pafs.S3FileSystem(access_key="test", secret_key="test", region="us-east-1", scheme="http",
                                 endpoint_override=f"127.0.0.1:{self.port}", allow_bucket_creation=True)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)


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
