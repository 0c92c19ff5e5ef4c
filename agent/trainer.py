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

:meth:`ClientTrainer.apply_gradient` receives the server's gradient with
respect to the (noised) activations. What it may do depends on the
session's privacy mode, because every later row is computed with the
client half's weights, and so carries whatever those weights learnt:

* ``sl-frozen``: nothing. The client half is a fixed, data-independent (or
  public-data) function, so a row depends on its own record only and the
  per-row charge is the whole cost; the weights are never uploaded.
* ``sl-dpsgd``: a DP-SGD step (per-example ``grads``, clip each example to
  ``C'``, sum, add N(0, (z'C')^2), ``apply``), charged to the records of the
  batch *before* it is applied. By induction the weights after any number
  of steps are post-processing of accounted DP-SGD releases (each step's
  input, the server's gradient, is itself post-processing of rows already
  released and charged), so later rows cost only their own per-row charge
  and the round-end weights cost nothing more: adaptive composition of
  Gaussian mechanisms (Dong, Roth & Su 2022, Thm. 3.2) over the releases
  that touched a record bounds everything about it.
* ``none``: plain SGD (``backward``); the session is declared non-private.

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
        rr = privacy.enabled and privacy.labels == "randomized_response"
        label_mode: Literal["plain", "randomized_response"] = (
            "randomized_response" if rr else "plain")
        self.dp = DpParams(mode=privacy.mode, clip_norm=privacy.clip_norm,
                           noise_multiplier=privacy.noise_multiplier if privacy.enabled else 0.0,
                           label_mode=label_mode,
                           label_epsilon=privacy.label_epsilon if rr else None,
                           mechanism="gaussian" if privacy.enabled else "none")
        self.samples_trained = 0
        self.weight_steps = 0  # updates applied to the client half since the last upload

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
            dp = DpParams(mode=dp.mode, clip_norm=dp.clip_norm,
                          noise_multiplier=dp.noise_multiplier, label_mode="none",
                          label_epsilon=None, mechanism=dp.mechanism)
        elif dp.label_mode == "randomized_response":
            assert self.privacy.label_epsilon is not None  # enforced by config validation
            labels = randomized_response(labels, k=self.num_classes,
                                         epsilon=self.privacy.label_epsilon, rng=self._rng)
            events.append(LabelRelease(epsilon=self.privacy.label_epsilon, records=batch.ids))
        return Prepared(ids=batch.ids, x=x, activations=noisy.astype(self._wire), labels=labels,
                        dp=dp, events=tuple(events))

    def apply_gradient(self, x: npt.NDArray[np.float32], grad: npt.NDArray[np.generic], *,
                       ids: Sequence[int], lr: float,
                       charge: Callable[[Sequence[PrivacyEvent]], object]) -> None:
        """Use the server's gradient for a released batch, as the privacy mode allows.

        ``sl-dpsgd``: the step's :class:`DpSgdStep`, charged to ``ids`` (the
        batch's records), is passed to ``charge`` (the accountant's ``spend``)
        *before* the noisy update is applied, so a step that would exceed the
        budget (``charge`` raises) changes nothing. ``sl-frozen``: the weights
        stay as they are. ``none``: plain SGD.
        """
        expected = (x.shape[0], *self.runtime.manifest.activation_shape)
        if grad.shape != expected:
            raise ProtocolError(f"gradient shape {grad.shape} does not match batch {expected}")
        if len(ids) != x.shape[0]:
            raise ProtocolError(f"{len(ids)} record ids for a batch of {x.shape[0]}")
        g = np.asarray(grad, dtype=np.float32)
        mode = self.privacy.mode
        if mode == "sl-frozen":
            self.samples_trained += x.shape[0]  # the server half trained on them
            return
        if mode == "none":
            self.runtime.backward(x, g, lr=lr)
            self.weight_steps += 1
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
        charge((DpSgdStep(noise_multiplier=self.privacy.dp_sgd_noise_multiplier,
                          records=tuple(ids)),))
        self.runtime.apply([n.astype(np.float32) for n in noisy], lr=lr)
        self.weight_steps += 1
        self.samples_trained += x.shape[0]

    @property
    def uploads_weights(self) -> bool:
        """Whether round-end client weights may leave the device in this mode."""
        return self.privacy.mode in ("sl-dpsgd", "none")
