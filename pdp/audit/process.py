"""Process mode: the server's writer thread hands batches to the audit writer process.

The server process keeps only what cannot leave it: sampling and the queue
append on the request thread, and on the writer thread one `pickle` call
per batch of `Flat` tuples and a pipe write (which releases the GIL).
Building, redaction, JSON and sink I/O happen in the child
(pdp.audit.child), which holds no GIL of the server's.

Decisions:
- The child is `sys.executable -c "...child.main(...)"` started with
  subprocess, not multiprocessing: like the "spawn" start method it is a new
  interpreter (never a fork of a process with gRPC threads), and besides it
  does not re-run the server's `__main__`, needs no resource-tracker
  process, is not joined by multiprocessing at exit (the child ignores
  SIGTERM), and its environment leaves out PROMETHEUS_MULTIPROC_DIR, so it
  never writes metric files of its own. It gets the two pipe ends
  (`pass_fds`) and a process group of its own (a terminal's Ctrl-C is for
  the server, which then drains the queue into the child).
- One pipe each way, framed by multiprocessing.connection. Sends (batches,
  policy sources, close) are serialized by one lock, so a source reaches the
  child before the batches queued after it. A new child gets every kept
  source first.
- A reader thread per child blocks on its reports (holding no GIL while
  idle): it keeps the count of records the child handled, hands the sinks'
  snapshots to pdp.audit.status (metrics, health, logs live in the server
  process), and notices the child's end.
- The child dies (kill -9, a crash): the records sent but not handled, and
  any batch that finds no child, are dropped and counted
  (`reason="writer_died"`); audit health turns NOT_SERVING until a new
  child reports; one error is logged; a new child starts at most once a
  second. A Check never waits for any of this. Counts the dead child wrote
  after its last snapshot are not known.
- `close`: the queue is drained into the child first (by AuditLog), then
  the child is told to close, and its final report awaited; a child that
  does not finish in time is killed.
"""

from __future__ import annotations

import contextlib
import copyreg
import fcntl
import io
import logging
import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pdp import logs, metrics
from pdp.audit.child import BATCH, CLOSE, SOURCE
from pdp.audit.record import Flat
from pdp.audit.settings import AuditSettings
from pdp.audit.status import SinkStatus
from pdp.audit.writer import KEPT_SOURCES
from pdp.logs import fields

log = logging.getLogger("pdp.audit")

RESTART_S = 1.0
_PIPE_BYTES = 1 << 20  # a batch or two in flight without blocking the writer thread
_CHILD = "import sys; from pdp.audit.child import main; sys.exit(main(sys.argv[1:]))"
_PDP_ROOT = str(Path(__file__).resolve().parents[2])


def _proxy_as_dict(mapping: MappingProxyType[Any, Any]) -> tuple[type[dict[Any, Any]], tuple[Any]]:
    return dict, (dict(mapping),)


# Request properties are read-only proxies, which do not pickle: they travel as dicts.
_DISPATCH: dict[Any, Any] = {**copyreg.dispatch_table, MappingProxyType: _proxy_as_dict}


def dumps(message: object) -> bytes:
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=5)
    pickler.dispatch_table = _DISPATCH
    pickler.dump(message)
    return buffer.getvalue()


def _log_setup() -> tuple[str, str] | None:
    """This process's pdp.logs configuration, for the child (None: not configured)."""
    root = logging.getLogger("pdp")
    if not root.handlers:
        return None
    json_lines = isinstance(root.handlers[0].formatter, logs.JsonFormatter)
    return logging.getLevelName(root.level).lower(), "json" if json_lines else "text"


class _Child:
    """One writer process and the two ends of its pipes."""

    def __init__(self, settings: AuditSettings) -> None:
        child_in, self_out = os.pipe()
        self_in, child_out = os.pipe()
        with contextlib.suppress(OSError):  # Linux only; a smaller pipe just blocks sooner
            fcntl.fcntl(self_out, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        env = {k: v for k, v in os.environ.items() if k != metrics.MULTIPROC_ENV}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PDP_ROOT, env.get("PYTHONPATH")]))
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(child_in), str(child_out)],
                pass_fds=(child_in, child_out), env=env, stdin=subprocess.DEVNULL,
                process_group=0,
            )
        except BaseException:
            os.close(self_out)
            os.close(self_in)
            raise
        finally:
            os.close(child_in)
            os.close(child_out)
        self.outbox = Connection(self_out, readable=False)
        self.inbox = Connection(self_in, writable=False)
        self.sent = 0  # records sent
        self.handled = 0  # records the child reported handled
        self.errors = 0  # of which lost to errors
        self.finished = threading.Event()  # the final report came
        self.gone = False  # its pipe broke or closed
        self.send(dumps((settings, _log_setup())))

    def send(self, data: bytes, records: int = 0) -> bool:
        if self.gone:
            return False
        try:
            self.outbox.send_bytes(data)
        except OSError:
            self.gone = True
            return False
        self.sent += records
        return True


class ProcessWriter:
    def __init__(self, settings: AuditSettings, status: SinkStatus,
                 drop: Callable[[str, int], object]) -> None:
        self._settings = settings
        self._status = status
        self._drop = drop
        self._lock = threading.Lock()  # one sender at a time; guards _child
        self._sources: dict[str, Mapping[str, Any]] = {}
        self._closing = threading.Event()
        self._started_at = 0.0
        self._reader: threading.Thread | None = None
        with self._lock:
            self._child = self._start()

    def _start(self) -> _Child:
        """A new child, told every kept source (the lock held)."""
        self._started_at = time.monotonic()
        child = _Child(self._settings)
        for version, source in self._sources.items():
            child.send(dumps((SOURCE, version, source)))
        self._reader = threading.Thread(target=self._follow, args=(child,),
                                        name="pdp-audit-reports", daemon=True)
        self._reader.start()
        return child

    def write(self, batch: Sequence[Flat]) -> None:
        data = dumps((BATCH, batch))  # one C call for the whole batch
        with self._lock:
            if not self._child.send(data, len(batch)):
                self._drop("writer_died", len(batch))

    def policy_loaded(self, version: str, source: Mapping[str, Any]) -> None:
        with self._lock:
            self._sources[version] = source
            while len(self._sources) > KEPT_SOURCES:
                del self._sources[next(iter(self._sources))]
            self._child.send(dumps((SOURCE, version, source)))

    def info(self) -> dict[str, Any]:
        """The child's pid, and the records sent to it that it has not handled yet."""
        child = self._child
        return {"writer_pid": child.proc.pid, "in_writer": child.sent - child.handled}

    def _follow(self, child: _Child) -> None:
        """The reader thread of one child: its reports, then its end."""
        while True:
            try:
                handled, errors, snapshot, final = child.inbox.recv()
            except (EOFError, OSError):
                break
            if errors > child.errors:
                self._drop("error", errors - child.errors)
                child.errors = errors
            child.handled = handled
            if snapshot is not None:
                self._status.update(snapshot)
            if final:
                child.finished.set()
        child.gone = True
        child.inbox.close()
        self._reap(child)
        if not child.finished.is_set():
            self._died(child)

    def _reap(self, child: _Child) -> None:
        try:
            child.proc.wait(5)
        except subprocess.TimeoutExpired:  # closed its output but still running
            child.proc.kill()
            child.proc.wait()

    def _died(self, child: _Child) -> None:
        with self._lock:  # no send is under way: `sent` is final
            lost = child.sent - child.handled
        if lost:
            self._drop("writer_died", lost)
        self._status.writer_changed(up=False)
        if self._closing.is_set():
            return
        log.error("audit writer process died; starting a new one",
                  extra=fields(writer_pid=child.proc.pid, exitcode=child.proc.returncode,
                               lost=lost))
        delay = self._started_at + RESTART_S - time.monotonic()
        while not self._closing.wait(max(0.0, delay)):
            with self._lock:
                if self._closing.is_set():
                    return
                try:
                    self._child = self._start()
                    return
                except OSError as exc:  # no process to be had now: try again in a while
                    log.error("cannot start the audit writer process",
                              extra=fields(error=str(exc)))
            delay = RESTART_S

    def close(self, timeout_s: float) -> None:
        """Tell the child to finish (the queue is drained already) and wait for it."""
        deadline = time.monotonic() + timeout_s
        self._closing.set()
        if self._lock.acquire(timeout=timeout_s):  # a send stuck on a stuck child: kill it
            try:
                self._child.send(dumps((CLOSE,)))
            finally:
                self._lock.release()
        child = self._child
        if not child.gone and not child.finished.wait(max(0.0, deadline - time.monotonic())):
            log.warning("audit writer process did not finish in %.0fs; killing it", timeout_s)
            child.proc.kill()
        child.outbox.close()
        reader = self._reader
        if reader is not None:
            reader.join(max(1.0, deadline - time.monotonic()) + 5)
