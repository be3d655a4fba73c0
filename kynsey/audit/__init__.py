"""The audit trail (SPEC F9): append-only, hash-chained, queryable."""

from kynsey.audit.log import AuditRecord, append

__all__ = ["AuditRecord", "append"]
