"""Privacy events: one value per thing a device releases (pure, no I/O).

The accountant composes these.  Every event names which records it touches:

* ``records=None``: the release may depend on EVERY record the device holds
  (worst case).  It is charged to all records, including future ones.
* ``records=(id, ...)``: the release depends only on those records (one
  activation row per listed record, or one label per listed record).

Sensitivity convention: a Gaussian event with ``noise_multiplier`` z means
noise of standard deviation z*C on a contribution clipped to L2 norm C; the
accountant turns it into a Gaussian-DP parameter mu = s/z, where s = 2 under
"replace-one" adjacency (the record takes any other value) and s = 1 under
"zero-out" adjacency (the record is compared with a null record / removed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from protocol.errors import PrivacyError

RecordId = int | str


def _check_records(records: tuple[RecordId, ...] | None) -> None:
    if records is None:
        return
    if not isinstance(records, tuple) or not records:
        raise PrivacyError("records must be a non-empty tuple of ids or None (= every record)")
    for r in records:
        if isinstance(r, bool) or not isinstance(r, int | str):
            raise PrivacyError(f"record id must be int or str, got {r!r}")


def _check_z(z: float) -> None:
    if not (isinstance(z, int | float) and math.isfinite(z) and z > 0):
        raise PrivacyError(f"noise_multiplier must be a finite number > 0, got {z!r}")


def _check_count(count: int) -> None:
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise PrivacyError(f"count must be an int >= 1, got {count!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class GaussianRelease:
    """``count`` Gaussian-mechanism releases of each listed record's clipped row.

    One activation batch in which every record appears once is ``count=1``;
    re-sending the same records in a later epoch is a new event.
    """

    noise_multiplier: float
    count: int = 1
    records: tuple[RecordId, ...] | None = None

    def __post_init__(self) -> None:
        _check_z(self.noise_multiplier)
        _check_count(self.count)
        _check_records(self.records)


@dataclass(frozen=True, slots=True, kw_only=True)
class LabelRelease:
    """Labels of the listed records released with epsilon-DP k-ary randomized response.

    A label sent in the clear is not a privacy event: it is simply not
    protected, and the device must declare it (see docs/privacy.md).
    """

    epsilon: float
    records: tuple[RecordId, ...] | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.epsilon, int | float) and math.isfinite(self.epsilon)
                and self.epsilon > 0):
            raise PrivacyError(f"epsilon must be a finite number > 0, got {self.epsilon!r}")
        _check_records(self.records)


@dataclass(frozen=True, slots=True, kw_only=True)
class DpSgdStep:
    """``count`` DP-SGD steps on the client half, charged to the records in their batch.

    One step clips each listed record's own gradient to ``C``, sums and adds
    N(0, (z*C)^2): a Gaussian release of the batch, whose sensitivity to one
    record is ``C`` (zero-out) or ``2C`` (replace-one), so it costs exactly what a
    :class:`GaussianRelease` of those records costs. Records outside the batch
    are not touched: which records form a batch is drawn by the device's own
    generator, independently of every record's value, so membership reveals
    nothing about the data (it is *visible* to the server, which is why no
    amplification by subsampling is claimed for it).
    ``records=None`` charges every record (use when the batch cannot be named).
    """

    noise_multiplier: float
    count: int = 1
    records: tuple[RecordId, ...] | None = None

    def __post_init__(self) -> None:
        _check_z(self.noise_multiplier)
        _check_count(self.count)
        _check_records(self.records)


@dataclass(frozen=True, slots=True, kw_only=True)
class PoissonSampledGaussian:
    """``count`` Gaussian steps on Poisson-sampled batches whose membership stays hidden.

    Valid ONLY when every record was included independently with probability
    ``sampling_prob`` by the device's own generator and nothing that leaves the
    device reveals which records were drawn (record-level DP-FedAvg: only the
    noised sum of a whole round's steps is sent). Charged to every record and
    composed by Google's ``dp_accounting`` PLD accountant as
    ``PoissonSampledDpEvent(q, GaussianDpEvent(z))`` under the accountant's
    adjacency (``REPLACE_ONE`` or ``ADD_OR_REMOVE_ONE``).
    """

    noise_multiplier: float
    sampling_prob: float
    count: int = 1

    def __post_init__(self) -> None:
        _check_z(self.noise_multiplier)
        _check_count(self.count)
        q = self.sampling_prob
        if isinstance(q, bool) or not (isinstance(q, int | float) and 0.0 < q <= 1.0):
            raise PrivacyError(f"sampling_prob must be in (0, 1], got {q!r}")


PrivacyEvent = GaussianRelease | LabelRelease | DpSgdStep | PoissonSampledGaussian
