"""Audit: one structured record per decision, written off the decision path.

`AuditLog(settings)` is the `AuditRecorder` the decision service calls;
the modules here are its parts: settings, record, redact, sampling, queue,
sinks and the policy source.
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
