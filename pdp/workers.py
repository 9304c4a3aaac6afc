"""`--workers N`: N server processes on one port, so that every core serves.

Each worker is a full server (`pdp.server.run`) bound with SO_REUSEPORT; the
kernel spreads connections across them. This parent only supervises: it
forwards SIGTERM/SIGINT (graceful stop) and SIGHUP (reload) to the workers,
restarts a worker that dies, and exits 0 once all have stopped cleanly.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from multiprocessing.process import BaseProcess

from pdp import logs, metrics
from pdp.config import Config
from pdp.logs import fields

log = logging.getLogger("pdp.workers")

RESTART_DELAY_S = 1.0
# A worker that dies this soon after starting will not do better on a restart
# (bad TLS file, port taken...): stop them all instead of looping.
STARTUP_S = 10.0
SUPERVISOR_POLL_S = 0.5


def supervise(config: Config, count: int) -> int:
    problem = _check_address(config.server.listen)
    if problem:
        log.error("cannot start workers", extra=fields(listen=config.server.listen, error=problem))
        return 1
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that has gRPC loaded
    procs: list[BaseProcess] = [_start(ctx, config, i) for i in range(count)]
    started = [time.monotonic()] * count
    stop = threading.Event()
    _install_signal_handlers(stop, procs)
    log.info("workers started", extra=fields(workers=count, pids=[p.pid for p in procs]))
    while not stop.wait(0.5):
        for i, proc in enumerate(procs):
            if proc.exitcode is None or stop.is_set():
                continue
            if time.monotonic() - started[i] < STARTUP_S:
                log.error("worker failed at startup; stopping all",
                          extra=fields(worker=i, exitcode=proc.exitcode))
                _terminate(procs)
                stop.set()
                break
            log.error("worker died; restarting", extra=fields(worker=i, exitcode=proc.exitcode))
            metrics.worker_exited(proc.pid)
            time.sleep(RESTART_DELAY_S)
            procs[i], started[i] = _start(ctx, config, i), time.monotonic()
    return _stop_all(procs, config.server.grace_seconds)


def _terminate(procs: list[BaseProcess]) -> None:
    for proc in procs:
        if proc.pid is not None and proc.exitcode is None:
            os.kill(proc.pid, signal.SIGTERM)


def _start(ctx: multiprocessing.context.SpawnContext, config: Config, index: int) -> BaseProcess:
    proc = ctx.Process(target=_worker_main, args=(config, index), name=f"pdp-worker-{index}")
    proc.start()
    return proc


def _worker_main(config: Config, index: int) -> None:
    from pdp import server  # imported in the child only

    logs.configure(config.log.level, config.log.format)
    _stop_with_supervisor(os.getppid())
    raise SystemExit(server.run(config, reuse_port=True, pool_worker=True))


def _stop_with_supervisor(supervisor: int) -> None:
    """A worker whose supervisor is gone (SIGKILL, the OOM killer) stops gracefully,
    rather than serve on unsupervised and keep the port."""

    def watch() -> None:
        while os.getppid() == supervisor:
            time.sleep(SUPERVISOR_POLL_S)
        log.error("supervisor gone; stopping", extra=fields(supervisor=supervisor))
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="pdp-supervisor-watch", daemon=True).start()


def _install_signal_handlers(stop: threading.Event, procs: list[BaseProcess]) -> None:
    def forward(signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.pid is not None and proc.exitcode is None:
                os.kill(proc.pid, signum)

    def on_stop(_signum: int, _frame: object) -> None:
        stop.set()
        _terminate(procs)

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, forward)


def _stop_all(procs: list[BaseProcess], grace_seconds: float) -> int:
    deadline = time.monotonic() + grace_seconds + 5
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.exitcode is None:
            log.error("worker did not stop in time; killing it", extra=fields(pid=proc.pid))
            proc.kill()
            proc.join()
    codes = [p.exitcode for p in procs]
    log.info("workers stopped", extra=fields(exitcodes=codes))
    return 0 if all(c == 0 for c in codes) else 1


def _check_address(listen: str) -> str | None:
    """Workers need a fixed port that nobody else holds (SO_REUSEPORT would share it)."""
    host, _, port_text = listen.rpartition(":")
    host = host.strip("[]")
    if not port_text.isdigit() or int(port_text) == 0:
        return "--workers above 1 needs a fixed port in --listen"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, int(port_text)))
        except OSError as exc:
            return f"cannot bind {listen}: {exc.strerror}"
    return None
