"""The audit writer process: `main([IN_FD, OUT_FD])`.

Started by pdp.audit.process in the server process, it builds, redacts,
serializes and writes the records, so that none of that work holds the
server's GIL. It reads pickled messages from IN_FD, in order:

    (settings, log_setup)              first, once: open the sinks
    ("source", version, source)        the policy source of a version
    ("batch", [Flat, ...])             records to build and write
    ("close",)                         write nothing more, close the sinks

and answers on OUT_FD with a report after the sinks are open, after each
batch, and at the end: (records handled, records lost to errors, snapshot
or None, final). The sinks' snapshot rides along when a sink's health
changed, and otherwise at most every `REPORT_S`; a snapshot held back is
sent when it is due even if no batch comes.

It ignores SIGINT, SIGTERM and SIGHUP (and runs in a process group of its
own): the server process drives shutdown and draining. When its input
reaches end of file (the server process is gone), it closes the sinks
after writing what it got, and exits.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import signal
import time
from multiprocessing.connection import Connection

from pdp import logs
from pdp.audit.writer import RecordWriter

log = logging.getLogger("pdp.audit")

SOURCE, BATCH, CLOSE = "source", "batch", "close"
REPORT_S = 0.5


class _Reporter:
    def __init__(self, outbox: Connection, writer: RecordWriter) -> None:
        self._outbox = outbox
        self._writer = writer
        self.handled = 0
        self.errors = 0
        self._health: tuple[bool, ...] = ()
        self._sent_at = 0.0
        self._held = False  # a batch was reported without its snapshot

    def batch_done(self, count: int, failed: bool) -> None:
        self.handled += count
        if failed:
            self.errors += count
        health = tuple(sink.healthy for sink in self._writer.sinks)
        due = health != self._health or time.monotonic() - self._sent_at >= REPORT_S
        self.send(with_snapshot=due)

    def due_in(self) -> float | None:
        """Seconds until the held snapshot is due (None: nothing held)."""
        if not self._held:
            return None
        return max(0.0, self._sent_at + REPORT_S - time.monotonic())

    def send(self, with_snapshot: bool = True, final: bool = False) -> None:
        snapshot = None
        if with_snapshot:
            snapshot = self._writer.snapshot()
            self._health = tuple(sink.healthy for sink in self._writer.sinks)
            self._sent_at = time.monotonic()
        self._held = not with_snapshot
        with contextlib.suppress(OSError):  # the server process is gone: write what is left
            self._outbox.send((self.handled, self.errors, snapshot, final))


def _serve(inbox: Connection, writer: RecordWriter, reporter: _Reporter) -> None:
    while True:
        if not inbox.poll(reporter.due_in()):
            reporter.send()
            continue
        try:
            message = pickle.loads(inbox.recv_bytes())
        except EOFError:
            return
        if message[0] == BATCH:
            failed = False
            try:
                writer.write(message[1])
            except Exception:  # the writer must outlive any bad batch
                log.exception("audit writer could not write a batch of %d", len(message[1]))
                failed = True
            reporter.batch_done(len(message[1]), failed)
        elif message[0] == SOURCE:
            writer.policy_loaded(message[1], message[2])
        else:
            return


def main(argv: list[str]) -> int:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    inbox = Connection(int(argv[0]), writable=False)
    outbox = Connection(int(argv[1]), readable=False)
    try:
        settings, log_setup = pickle.loads(inbox.recv_bytes())
    except EOFError:
        return 0
    if log_setup is not None:
        logs.configure(*log_setup)
    writer = RecordWriter(settings)
    reporter = _Reporter(outbox, writer)
    reporter.send()  # the sinks are open
    try:
        _serve(inbox, writer, reporter)
    finally:
        writer.close()
        reporter.send(final=True)
    return 0
