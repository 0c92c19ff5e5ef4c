"""The client half of split learning with local differential privacy (no I/O).

Theory of operation
-------------------
:meth:`ClientTrainer.prepare` turns a batch of records into what may leave
the device: the client half's activations ``a = forward(normalise(x))``,
each row clipped to L2 norm ``C`` and perturbed with N(0, (z*C)^2) (the
Gaussian mechanism, :mod:`agent.privacy.mechanisms`), labels sent plain or
through k-ary randomized response, and the privacy events the release costs
(charged to exactly the records in the batch). The caller passes the
:class:`Prepared` value to :class:`agent.outbox.Outbox`, which charges the
accountant *before* the message can leave.

:meth:`ClientTrainer.apply_gradient` runs the backward pass with the
server's gradient with respect to the (noised) activations: plain SGD
(``backward``), or DP-SGD (per-sample ``grads``, clip, sum, noise,
``apply``) when the client-half weights will be shared as DP-protected.
The backward pass uses the raw input kept on the device; it releases
nothing by itself. Its effect leaves the device only through the round-end
weights, which are either DP-SGD-protected (accounted per step here) or
declared ``unprotected`` in the message (see docs/privacy.md).

Not thread-safe: one trainer per agent, driven by the agent's main loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from agent.config import PrivacySection
from agent.privacy.events import DpSgdStep, GaussianRelease, LabelRelease, PrivacyEvent
from agent.privacy.mechanisms import dp_sgd_aggregate, privatize_activations, randomized_response
from agent.records import Batch
from models.runtime import ClientRuntime
from protocol.errors import ProtocolError
from protocol.messages import DpParams

__all__ = ["ClientTrainer", "Prepared"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Prepared:
    """A privatised batch ready to be released, and what releasing it costs."""

    ids: tuple[int, ...]
    x: npt.NDArray[np.float32] = field(repr=False)          # normalised input, kept on device
    activations: npt.NDArray[np.generic] = field(repr=False)  # privatised, wire dtype
    labels: npt.NDArray[np.int64] | None = field(repr=False)
    dp: DpParams
    events: tuple[PrivacyEvent, ...]


class ClientTrainer:
    """Runs the client half and applies local DP to everything it releases."""

    def __init__(self, runtime: ClientRuntime, privacy: PrivacySection, *,
                 rng: np.random.Generator, wire_dtype: str = "float16") -> None:
        self.runtime = runtime
        self.privacy = privacy
        self.num_classes = runtime.manifest.num_classes
        self._rng = rng
        self._wire = np.dtype(wire_dtype)
        label_mode: Literal["plain", "randomized_response"] = (
            "randomized_response" if privacy.labels == "randomized_response" else "plain")
        self.dp = DpParams(clip_norm=privacy.clip_norm,
                           noise_multiplier=privacy.noise_multiplier if privacy.enabled else 0.0,
                           label_mode=label_mode,
                           label_epsilon=privacy.label_epsilon if label_mode != "plain" else None,
                           mechanism="gaussian" if privacy.enabled else "none")
        self.samples_trained = 0

    def prepare(self, batch: Batch) -> Prepared:
        """Forward + local DP for ``batch``; labels None means an inference request."""
        x = self.runtime.normalise(batch.x).astype(np.float32, copy=False)
        a = self.runtime.forward(x)
        events: list[PrivacyEvent] = []
        if self.privacy.enabled:
            noisy = privatize_activations(a, clip_norm=self.privacy.clip_norm,
                                          noise_multiplier=self.privacy.noise_multiplier,
                                          rng=self._rng)
            events.append(GaussianRelease(noise_multiplier=self.privacy.noise_multiplier,
                                          records=batch.ids))
        else:
            noisy = a  # explicit non-private mode: declared in every message
        labels = batch.labels
        dp = self.dp
        if labels is None:
            dp = DpParams(clip_norm=dp.clip_norm, noise_multiplier=dp.noise_multiplier,
                          label_mode="none", label_epsilon=None, mechanism=dp.mechanism)
        elif self.privacy.labels == "randomized_response":
            assert self.privacy.label_epsilon is not None  # enforced by config validation
            labels = randomized_response(labels, k=self.num_classes,
                                         epsilon=self.privacy.label_epsilon, rng=self._rng)
            events.append(LabelRelease(epsilon=self.privacy.label_epsilon, records=batch.ids))
        return Prepared(ids=batch.ids, x=x, activations=noisy.astype(self._wire), labels=labels,
                        dp=dp, events=tuple(events))

    def apply_gradient(self, x: npt.NDArray[np.float32], grad: npt.NDArray[np.generic], *,
                       lr: float,
                       charge: Callable[[Sequence[PrivacyEvent]], object]) -> None:
        """Backward pass for a released batch.

        With ``privacy.weights == "dp_sgd"`` the step's :class:`DpSgdStep` is passed
        to ``charge`` (the accountant's ``spend``) *before* the noisy update is
        applied, so a step that would exceed the budget (``charge`` raises)
        changes nothing. With plain SGD nothing is charged: those weights are
        declared ``unprotected`` when uploaded.
        """
        expected = (x.shape[0], *self.runtime.manifest.activation_shape)
        if grad.shape != expected:
            raise ProtocolError(f"gradient shape {grad.shape} does not match batch {expected}")
        g = np.asarray(grad, dtype=np.float32)
        if self.privacy.weights != "dp_sgd":
            self.runtime.backward(x, g, lr=lr)
            self.samples_trained += x.shape[0]
            return
        # the server's gradient is of the batch-MEAN loss, so runtime.grads carries a 1/B
        # factor; DP-SGD clips each example's own gradient (Abadi et al. 2016, Alg. 1), so
        # undo it before clipping (dp_sgd_aggregate divides the noisy sum by B again)
        batch = x.shape[0]
        per_sample = [gi * batch for gi in self.runtime.grads(x, g)]
        noisy = dp_sgd_aggregate(per_sample, clip_norm=self.privacy.dp_sgd_clip_norm,
                                 noise_multiplier=self.privacy.dp_sgd_noise_multiplier,
                                 rng=self._rng)
        charge((DpSgdStep(noise_multiplier=self.privacy.dp_sgd_noise_multiplier),))
        self.runtime.apply([n.astype(np.float32) for n in noisy], lr=lr)
        self.samples_trained += x.shape[0]
