"""The gateway as separate OS processes (web, workers, beat) that the chaos run can kill and restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Process:
    name: str
    argv: list[str]
    env: dict
    log_path: Path
    popen: subprocess.Popen | None = None

    def start(self) -> Process:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child for its whole life
        # A session of its own, so SIGKILL reaches the whole process group (prefork children too).
        self.popen = subprocess.Popen(
            self.argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        return self

    def signal(self, sig: int) -> None:
        if self.popen and self.popen.poll() is None:
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 20.0) -> None:
        if not self.popen or self.popen.poll() is not None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.popen.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL the whole group: in-flight tasks die mid-call, as in a crash."""
        self.signal(signal.SIGKILL)
        if self.popen:
            self.popen.wait(timeout=10)


@dataclass
class Gateway:
    """Web (gunicorn), N Celery workers and beat, all on one database and one broker queue."""

    env: dict
    port: int
    workers: int
    log_dir: Path
    web: Process = field(init=False)
    worker_procs: list[Process] = field(default_factory=list)
    beat: Process = field(init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {args[0]} failed:\n{result.stderr[-3000:]}")
        return result.stdout

    def _web(self) -> Process:
        return Process("web", self.web_argv(), self.env, self.log_dir / "web.log")

    def web_argv(self, app: str = "hitl_gateway.wsgi", port: int | None = None) -> list[str]:
        """gunicorn as the gateway runs it; ``app`` and ``port`` for a same-flags reference (bench)."""
        return [
            sys.executable,
            "-m",
            "gunicorn",
            app,
            "--bind",
            f"127.0.0.1:{port or self.port}",
            "--workers",
            "2",
            "--threads",
            "8",
            "--worker-class",
            "gthread",
            "--graceful-timeout",
            "10",
        ]

    def _worker(self, index: int) -> Process:
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "hitl_gateway",
            "worker",
            "-Q",
            # The default queue and the media one (settings: HITL_MEDIA_QUEUE's default).
            f"{self.env['CELERY_TASK_DEFAULT_QUEUE']},{self.env['CELERY_TASK_DEFAULT_QUEUE']}.media",
            "--concurrency",
            "2",
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "-n",
            f"chaos{index}-{os.getpid()}@%h",
        ]
        return Process(f"worker{index}", argv, self.env, self.log_dir / f"worker{index}.log")

    def start(self) -> None:
        self.web = self._web().start()
        self.worker_procs = [self._worker(i).start() for i in range(self.workers)]
        beat_argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "hitl_gateway",
            "beat",
            "--loglevel",
            "WARNING",
            "-s",
            str(self.log_dir / "beat-schedule"),
        ]
        self.beat = Process("beat", beat_argv, self.env, self.log_dir / "beat.log").start()
        self.wait_web()

    def wait_web(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                # Up is answering: a health *warning* (HTTP 500 with its JSON report, such as an
                # old pending delivery while a rate-limited desk paces a backlog) is still up.
                response = requests.get(f"{self.url}/health/", headers={"Accept": "application/json"}, timeout=2)
                if response.ok or response.headers.get("Content-Type", "").startswith("application/json"):
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the web process did not come up; see {self.log_dir / 'web.log'}")

    def kill_worker(self, index: int = 0) -> None:
        self.worker_procs[index].kill()

    def start_worker(self, index: int = 0) -> None:
        self.worker_procs[index] = self._worker(index).start()

    def workers_scale(self, count: int) -> None:
        """Stop every worker process, then start ``count`` (the bench's scale-out runs)."""
        for process in self.worker_procs:
            process.stop()
        self.worker_procs = [self._worker(i).start() for i in range(count)]
        self.workers = count

    def restart_web(self) -> None:
        self.web.stop()
        self.web = self._web().start()
        self.wait_web()

    def stop(self) -> None:
        for process in [self.web, *self.worker_procs, self.beat]:
            process.stop()
