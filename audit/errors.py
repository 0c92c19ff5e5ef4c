"""Errors of the audit tool (subclasses of the project's tree in :mod:`protocol.errors`)."""

from __future__ import annotations

from protocol.errors import ConfigError, SplitfedError

__all__ = ["AuditError", "AuditInputError"]


class AuditError(SplitfedError):
    """An audit cannot be computed (inconsistent plan, capture or report)."""


class AuditInputError(AuditError, ConfigError):
    """Bad auditor input (plan file, capture directory, parameters): nothing is scored."""
