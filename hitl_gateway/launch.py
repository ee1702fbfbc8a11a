"""``make run``: the Procfile's processes (web, worker, beat) under honcho, with a smoother first run.

What it adds to ``honcho start``:
- the port is checked before anything starts, and a clash is said in one line with the way out
  (``make run PORT=8001``), instead of a worker and beat running for seconds before gunicorn's
  error scrolls by among their banners;
- once the web server answers, the next steps are printed (an admin user, an integration, the demo);
- Ctrl-C stops each process by a SIGTERM to the process itself, which stops its own children:
  Celery's worker makes a warm shutdown (running tasks finish, exit 0) and gunicorn's master a
  graceful one. honcho sent SIGTERM to the whole process group, so Celery's pool children died
  mid-task under their parent (the ERROR about the worker's exit), and SIGKILLed what still ran
  after 5 s, cutting the warm shutdown short; here that is 30 s;
- ``PROMETHEUS_MULTIPROC_DIR`` (``var/prometheus``), emptied at start, so ``/metrics`` sums the
  figures of every gunicorn and Celery process (``hitl_gateway.metrics``).

``python -m hitl_gateway.launch --check-port 8000`` only checks the port (exit 1 if taken).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from honcho import manager as honcho_manager
from honcho.environ import parse_procfile
from honcho.printer import Message, Printer

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
# Longer than a warm shutdown normally takes (a delivery's HTTP call times out within seconds).
STOP_TIMEOUT_SECONDS = 30


def port_in_use(port: int, host: str = HOST) -> bool:
    """Whether something already listens on ``host:port`` (binding is what gunicorn will try)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As gunicorn binds: a closed connection in TIME_WAIT does not count as "in use".
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def port_clash_message(port: int) -> str:
    return (
        f"Port {port} on {HOST} is already in use (another program, or a gateway already running): "
        f"stop it, or choose another port, e.g. make run PORT={port + 1}"
    )


def next_steps(port: int) -> list[str]:
    url = f"http://{HOST}:{port}"
    return [
        f"The gateway answers at {url}/ (Ctrl-C stops it). Next steps:",
        f"  1. an admin user:   .venv/bin/python manage.py createsuperuser, then log in at {url}/admin/",
        "  2. an integration:  .venv/bin/python manage.py create_integration --help (or the admin's Integrations)",
        "  3. or see a whole session on this machine, no Botpress or help desk needed: make demo",
    ]


class Manager(honcho_manager.Manager):
    """honcho's manager, stopping each process (not its group) and waiting for its warm shutdown."""

    def _killall(self, force: bool = False) -> None:
        running = [(name, p["pid"]) for name, p in self._processes.items() if "returncode" not in p and "pid" in p]
        if running:
            verb = "killing" if force else "stopping"
            self._system_print(f"{verb} {', '.join(name for name, _ in running)}\n")
        for _name, pid in running:
            with contextlib.suppress(ProcessLookupError):
                if force:
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGTERM)

    def loop(self) -> None:
        # honcho kills what still runs this long after the first stop (its default: 5 s).
        honcho_manager.KILL_WAIT = STOP_TIMEOUT_SECONDS
        super().loop()

    def announce(self, lines: list[str]) -> None:
        """Print ``lines`` among the processes' output (safe from any thread)."""
        for line in lines:
            self.events.put(Message(type="line", data=line + "\n", time=self._clock.now(), name="system", colour=None))


class _Printer(Printer):
    """honcho's printer, noting when the worker says it is ready."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.worker_ready = threading.Event()

    def write(self, message: Message) -> None:
        super().write(message)
        data = message.data.decode(errors="replace") if isinstance(message.data, bytes) else str(message.data)
        if (message.name or "").startswith("worker") and data.rstrip().endswith(" ready."):
            self.worker_ready.set()


def _announce_when_up(manager: Manager, printer: _Printer, port: int, timeout: float = 60.0) -> None:
    """Print the next steps once the web server answers and the worker is ready, after their banners."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not manager._terminating:
        try:
            with socket.create_connection((HOST, port), timeout=1):
                break
        except OSError:
            time.sleep(0.5)
    printer.worker_ready.wait(max(0.0, deadline - time.monotonic()))
    if not manager._terminating:
        manager.announce(next_steps(port))


def metrics_dir_prepare(var_dir: Path) -> Path:
    """An empty folder for this run's per-process metric files (a previous run's would be summed)."""
    folder = var_dir / "prometheus"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hitl_gateway.launch", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--check-port", type=int, metavar="PORT", help="only check that PORT is free")
    parser.add_argument("--procfile", type=Path, default=ROOT / "Procfile")
    args = parser.parse_args(argv)
    port = args.check_port or args.port
    if port_in_use(port):
        print(port_clash_message(port), file=sys.stderr)
        return 1
    if args.check_port:
        return 0

    var_dir = Path(os.environ.get("HITL_VAR_DIR", ROOT / "var"))
    env = dict(os.environ, PORT=str(port), PYTHONUNBUFFERED="1")
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir_prepare(var_dir))
    printer = _Printer(sys.stdout)
    manager = Manager(printer=printer)
    for name, command in parse_procfile(args.procfile.read_text()).processes.items():
        # exec: the command itself leads its process group, with no shell in between to die first.
        manager.add_process(f"{name}.1", f"exec {command}", env=env, cwd=str(ROOT))
    threading.Thread(target=_announce_when_up, args=(manager, printer, port), daemon=True).start()
    manager.loop()
    # Stopped on request and every process stopped cleanly: that is success. A process still
    # starting has no handler yet, and our SIGTERM ends it at once (-15): nothing of it ran yet.
    codes = [p.get("returncode") for p in manager._processes.values()]
    if manager.returncode in (130, 143) and all(code in (0, -signal.SIGTERM) for code in codes):
        return 0
    return manager.returncode or 0


if __name__ == "__main__":
    sys.exit(main())
