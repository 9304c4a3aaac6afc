"""Audit: one structured record per decision, written off the decision path.

`AuditLog(settings)` (log.py) is the `AuditRecorder` the decision service
calls. Its parts: settings ([audit]), sampling (which decisions), queue (the
bounded queue and the writer thread), record (the JSON object), redact (what
is never written), sinks (stdout, rotated file, Redis Stream) and source (the
policy's git commit or bundle publisher). follow.py reads records back for
`pdp audit tail`.
"""

from pdp.audit.log import AuditLog, build_sinks
from pdp.audit.settings import AuditConfigError, AuditSettings
from pdp.audit.source import PolicySource, bundle_source, directory_source

__all__ = [
    "AuditConfigError",
    "AuditLog",
    "AuditSettings",
    "PolicySource",
    "build_sinks",
    "bundle_source",
    "directory_source",
]
