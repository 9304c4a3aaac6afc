"""Audit: one structured record per decision, written off the decision path.

`AuditLog(settings)` (log.py) is the `AuditRecorder` the decision service
calls. Its parts: settings ([audit]), sampling (which decisions), queue (the
bounded queue and the writer thread), record (flattening a decision, and
the JSON object), process and child (the audit writer process that builds
and writes records; the default), writer (the sinks' owner, in the child or
on the writer thread), status (the sinks' health, counts and metrics in the
server process), redact (what is never written), sinks (stdout, rotated
file, Redis Stream) and source (the policy's git commit or bundle
publisher). follow.py reads records back for `pdp audit tail`.
"""

from pdp.audit.log import AuditLog
from pdp.audit.settings import AuditConfigError, AuditSettings
from pdp.audit.source import PolicySource, bundle_source, directory_source
from pdp.audit.writer import build_sinks

__all__ = [
    "AuditConfigError",
    "AuditLog",
    "AuditSettings",
    "PolicySource",
    "build_sinks",
    "bundle_source",
    "directory_source",
]
