"""Errors of ``agent.privacy`` (subclasses of :mod:`protocol.errors`)::

    PrivacyError
    ├── BudgetExceeded          (protocol.errors) next release would exceed the budget
    └── AccountantStateError    spend file corrupt, missing after it existed, or unwritable
"""

from __future__ import annotations

from protocol.errors import PrivacyError


class AccountantStateError(PrivacyError):
    """The accountant's state on disk cannot be trusted; the spend is never reset silently."""
