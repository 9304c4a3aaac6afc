import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PolicyInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PolicyIssue(_message.Message):
    __slots__ = ("file", "line", "column", "message")
    FILE_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    file: str
    line: int
    column: int
    message: str
    def __init__(self, file: _Optional[str] = ..., line: _Optional[int] = ..., column: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class ReloadError(_message.Message):
    __slots__ = ("message", "issues", "at")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ISSUES_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    message: str
    issues: _containers.RepeatedCompositeFieldContainer[PolicyIssue]
    at: _timestamp_pb2.Timestamp
    def __init__(self, message: _Optional[str] = ..., issues: _Optional[_Iterable[_Union[PolicyIssue, _Mapping]]] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PolicyInfoResponse(_message.Message):
    __slots__ = ("version", "loaded_at", "source_dir", "files", "roles", "rules", "grants", "subjects", "tests", "last_error", "audit")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LOADED_AT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_DIR_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    SUBJECTS_FIELD_NUMBER: _ClassVar[int]
    TESTS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    AUDIT_FIELD_NUMBER: _ClassVar[int]
    version: str
    loaded_at: _timestamp_pb2.Timestamp
    source_dir: str
    files: int
    roles: int
    rules: int
    grants: int
    subjects: int
    tests: int
    last_error: ReloadError
    audit: AuditStatus
    def __init__(self, version: _Optional[str] = ..., loaded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source_dir: _Optional[str] = ..., files: _Optional[int] = ..., roles: _Optional[int] = ..., rules: _Optional[int] = ..., grants: _Optional[int] = ..., subjects: _Optional[int] = ..., tests: _Optional[int] = ..., last_error: _Optional[_Union[ReloadError, _Mapping]] = ..., audit: _Optional[_Union[AuditStatus, _Mapping]] = ...) -> None: ...

class AuditStatus(_message.Message):
    __slots__ = ("enabled", "healthy", "queue_depth", "queue_size", "dropped", "sinks")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    QUEUE_SIZE_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    SINKS_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    healthy: bool
    queue_depth: int
    queue_size: int
    dropped: int
    sinks: _containers.RepeatedCompositeFieldContainer[AuditSinkStatus]
    def __init__(self, enabled: _Optional[bool] = ..., healthy: _Optional[bool] = ..., queue_depth: _Optional[int] = ..., queue_size: _Optional[int] = ..., dropped: _Optional[int] = ..., sinks: _Optional[_Iterable[_Union[AuditSinkStatus, _Mapping]]] = ...) -> None: ...

class AuditSinkStatus(_message.Message):
    __slots__ = ("name", "healthy", "written", "lost", "last_error")
    NAME_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    WRITTEN_FIELD_NUMBER: _ClassVar[int]
    LOST_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    name: str
    healthy: bool
    written: int
    lost: int
    last_error: str
    def __init__(self, name: _Optional[str] = ..., healthy: _Optional[bool] = ..., written: _Optional[int] = ..., lost: _Optional[int] = ..., last_error: _Optional[str] = ...) -> None: ...

class ReloadRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadResponse(_message.Message):
    __slots__ = ("ok", "changed", "info", "error")
    OK_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    changed: bool
    info: PolicyInfoResponse
    error: ReloadError
    def __init__(self, ok: _Optional[bool] = ..., changed: _Optional[bool] = ..., info: _Optional[_Union[PolicyInfoResponse, _Mapping]] = ..., error: _Optional[_Union[ReloadError, _Mapping]] = ...) -> None: ...
