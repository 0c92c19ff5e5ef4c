"""A complete audit of one simulated device session: canaries + every attack (orchestration).

Used by ``splitfed audit run``, the tests and ``python -m bench audit``. The
device runs in :mod:`audit.harness` (the agent's own code); every attack
reads only the capture directory the harness wrote plus what its threat
model grants (published client half, final server half, auxiliary public
data, the canary plan); the ground truth is used only to score the attacks.

Data roles (PLAID by default): the TRAIN split is shuffled with the seed; the
device holds its first ``n_records`` windows plus its share of the canaries,
and the next ``n_records`` (as many as there are) are the *non-members* for
membership inference, so members and non-members come from one
distribution (a TRAIN-vs-TEST comparison would also measure any shift
between the splits). The TEST split is the attacker's *auxiliary* public
data of the same kind (for the decoder and the gradient centroids).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from agent.config import PrivacySection
from audit.attacks import (
    RowDecoder,
    gradient_direction_scores,
    gradient_norm_scores,
    label_posterior,
    lira_scores,
    logit_confidence,
    membership_loss_attack,
    privatize_like,
    reconstruction_metrics,
)
from audit.canaries import CanaryPlan, canaries_for_device
from audit.capture import load_capture
from audit.errors import AuditInputError
from audit.harness import TrainerFactory, default_trainer, run_session
from audit.metrics import auc, macro_auc, tpr_at_fpr
from audit.one_run import audit_capture
from audit.scores import forward_all, losses
from models.data import Windows
from models.manifest import Manifest
from models.runtime import ClientRuntime, ServerRuntime

__all__ = ["SessionSpec", "audit_session", "privacy_for"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionSpec:
    privacy: PrivacySection
    n_records: int = 64
    epochs: int = 3
    batch_size: int = 16
    client_lr: float = 0.05
    server_lr: float = 0.01
    seed: int = 0
    lira_shadows: int = 0   # shadow sessions for LiRA (0 = loss-threshold attack only)


def _member_split(w: Windows, n: int, seed: int
                  ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    idx = np.random.default_rng(seed + 17).permutation(len(w.x_train))
    return idx[:n], idx[n:2 * n]


def audit_session(windows: Windows, manifest: Manifest, plan: CanaryPlan, spec: SessionSpec,
                  work_dir: Path, *, trainer_factory: TrainerFactory = default_trainer,
                  attacks: bool = True) -> dict[str, Any]:
    """Run the session, audit it from its capture, return the report's ``results`` section."""
    p = spec.privacy
    if not 1 <= spec.n_records < len(windows.x_train):
        raise AuditInputError(f"n_records must be in 1..{len(windows.x_train) - 1}")
    mem_idx, non_idx = _member_split(windows, spec.n_records, spec.seed)
    records = [(int(i), windows.x_train[i], int(windows.y_train[i])) for i in mem_idx]
    records += canaries_for_device(plan)
    res = run_session(records, privacy=p, manifest=manifest, capture_dir=work_dir / "capture",
                      state_dir=work_dir / "device-state", epochs=spec.epochs,
                      batch_size=spec.batch_size, client_lr=spec.client_lr,
                      server_lr=spec.server_lr, seed=spec.seed, trainer_factory=trainer_factory)
    cap = load_capture(res.capture_dir, device=res.device, verify_key=res.verify_key)
    client = ClientRuntime.from_manifest(manifest)   # the published client half
    server = ServerRuntime.from_manifest(manifest)
    server.set_weights(res.server_weights)           # the final server half
    canary = audit_capture(plan, cap, client=client, delta=p.delta, final_server=server,
                           reported_epsilon=res.reported_epsilon)
    out: dict[str, Any] = {
        "mode": p.mode, "reported_epsilon": res.reported_epsilon, "delta": p.delta,
        "noise_multiplier": p.noise_multiplier if p.enabled else 0.0,
        "dp_sgd_noise_multiplier": p.dp_sgd_noise_multiplier if p.mode == "sl-dpsgd" else None,
        "label_policy": p.labels, "label_epsilon": p.label_epsilon, "epochs": spec.epochs,
        "records": spec.n_records, "canaries": plan.m,
        "canaries_included": int(plan.included.sum()),
        "capture": {"activation_batches": len(cap.rows), "gradient_batches": len(cap.grads),
                    "client_weights": len(cap.weights), "rejected": dict(cap.rejected),
                    "duplicates": cap.duplicates},
        "one_run": canary.as_dict(),
    }
    if not attacks:
        return out
    x_norm = {rid: client.normalise(x).astype(np.float64) for rid, x, _ in records}
    label_of = {rid: y for rid, _, y in records}
    rng = np.random.default_rng(spec.seed + 99)
    dp = cap.rows[0].dp
    # ---- reconstruction ------------------------------------------------------------
    aux_x, aux_y = windows.x_test, windows.y_test.astype(np.int64)
    aux_rows = forward_all(client, aux_x)
    aux_norm = client.normalise(aux_x).astype(np.float64)
    noisy_aux = privatize_like(aux_rows, clip_norm=dp.clip_norm,
                               noise_multiplier=dp.noise_multiplier, mechanism=dp.mechanism,
                               rng=rng)
    reps = 4 if dp.mechanism != "none" else 1  # several noise draws per aux window
    if reps > 1:
        noisy_aux = np.concatenate([noisy_aux] + [
            privatize_like(aux_rows, clip_norm=dp.clip_norm, noise_multiplier=dp.noise_multiplier,
                           mechanism=dp.mechanism, rng=rng) for _ in range(reps - 1)])
    decoder = RowDecoder(seed=spec.seed).fit(noisy_aux, np.tile(aux_norm, (reps, 1, 1)))
    rows = np.concatenate([m.activations.reshape(len(m.activations), -1)
                           for m in cap.rows]).astype(np.float64)
    ids = [rid for batch in res.truth.batch_ids for rid in batch]
    real = np.array([rid < plan.first_id for rid in ids])
    truth_x = np.stack([x_norm[rid] for rid, r in zip(ids, real, strict=True) if r])
    mean_window = aux_norm.mean(axis=0)
    recon = reconstruction_metrics(decoder, rows[real], truth_x, mean_window=mean_window,
                                   seed=spec.seed)
    clean_dec = RowDecoder(seed=spec.seed).fit(
        privatize_like(aux_rows, clip_norm=dp.clip_norm, noise_multiplier=0.0, mechanism="none",
                       rng=rng), aux_norm)
    clean_rows = forward_all(client, windows.x_train[mem_idx])
    base = reconstruction_metrics(clean_dec, clean_rows,
                                  np.stack([x_norm[int(i)] for i in mem_idx]),
                                  mean_window=mean_window, seed=spec.seed)
    # the first row sent for the record with the smallest id (the same window across
    # sessions that share the seed, so plots can compare them)
    ex = ids.index(min(int(i) for i in mem_idx))
    example = {"record": ids[ex], "true": [round(float(v), 4) for v in x_norm[ids[ex]].ravel()],
               "reconstructed": [round(float(v), 4)
                                 for v in decoder.predict(rows[ex:ex + 1]).ravel()]}
    out["reconstruction"] = {"attack": recon.as_dict(), "no_dp_baseline": base.as_dict(),
                             "example": example}
    # ---- labels ------------------------------------------------------------------------
    k = manifest.num_classes
    sent = np.concatenate([np.asarray(m.labels, np.int64) for m in cap.rows
                           if m.labels is not None])
    true = np.array([label_of[rid] for rid in ids], np.int64)
    acts = rows.astype(np.float32).reshape(len(rows), *manifest.activation_shape)
    b = manifest.max_batch
    probs = np.concatenate([server.predict(acts[i:i + b]) for i in range(0, len(acts), b)])
    lab_eps = dp.label_epsilon if dp.label_mode == "randomized_response" else None
    grads = np.concatenate([g.grad.reshape(len(g.grad), -1) for g in cap.grads]).astype(
        np.float64)
    centroids = _class_centroids(manifest, res.server_weights, noisy_aux[:len(aux_rows)],
                                 aux_y, k)
    frequent = int(np.bincount(true, minlength=k).argmax())
    out["labels"] = {
        "label_mode": dp.label_mode, "label_epsilon": lab_eps,
        "auc_sent_label": macro_auc(label_posterior(sent, None, k=k, label_epsilon=lab_eps),
                                    true),
        "auc_posterior": macro_auc(label_posterior(sent, probs, k=k, label_epsilon=lab_eps),
                                   true),
        "auc_model_only": macro_auc(probs, true),
        "auc_gradient_direction": macro_auc(gradient_direction_scores(grads, centroids), true),
        "auc_gradient_norm_binary": auc(gradient_norm_scores(grads), true == frequent),
        "rr_keep_rate": float(np.mean(sent == true)),
    }
    # ---- membership --------------------------------------------------------------------
    final_client = ClientRuntime.from_manifest(manifest)
    final_client.set_weights(res.client_weights)
    mem = losses(final_client, server, windows.x_train[mem_idx], windows.y_train[mem_idx])
    non = losses(final_client, server, windows.x_train[non_idx], windows.y_train[non_idx])
    out["membership"] = {"loss_threshold": membership_loss_attack(mem, non)}
    if spec.lira_shadows > 0:
        out["membership"]["lira"] = _lira(windows, manifest, spec, work_dir, mem_idx, non_idx,
                                          np.concatenate([mem, non]), trainer_factory)
    return out


def _lira(windows: Windows, manifest: Manifest, spec: SessionSpec, work_dir: Path,
          mem_idx: npt.NDArray[np.int64], non_idx: npt.NDArray[np.int64],
          target_loss: npt.NDArray[np.float64], trainer_factory: TrainerFactory
          ) -> dict[str, float]:
    """Online LiRA with ``spec.lira_shadows`` shadow sessions on halves of the pool."""
    pool = np.concatenate([mem_idx, non_idx])
    rng = np.random.default_rng(spec.seed + 4242)
    n = len(pool)
    stats: list[npt.NDArray[np.float64]] = []
    masks: list[npt.NDArray[np.bool_]] = []
    for s in range(spec.lira_shadows):
        # balanced: shadow s and s+1 take complementary halves, so every example is IN and OUT
        if s % 2 == 0:
            perm = rng.permutation(n)
            half = np.zeros(n, bool)
            half[perm[:n // 2]] = True
        else:
            half = ~masks[-1]
        chosen = pool[half]
        recs = [(int(i), windows.x_train[i], int(windows.y_train[i])) for i in chosen]
        sh = run_session(recs, privacy=spec.privacy, manifest=manifest,
                         capture_dir=work_dir / f"shadow{s}" / "capture",
                         state_dir=work_dir / f"shadow{s}" / "state", epochs=spec.epochs,
                         batch_size=spec.batch_size, client_lr=spec.client_lr,
                         server_lr=spec.server_lr, seed=spec.seed + 1000 + s,
                         trainer_factory=trainer_factory)
        c = ClientRuntime.from_manifest(manifest)
        c.set_weights(sh.client_weights)
        srv = ServerRuntime.from_manifest(manifest)
        srv.set_weights(sh.server_weights)
        stats.append(logit_confidence(losses(c, srv, windows.x_train[pool],
                                             windows.y_train[pool])))
        masks.append(half)
    if len(masks) < 2:
        raise AuditInputError("LiRA needs at least 2 shadow sessions")
    scores = lira_scores(logit_confidence(target_loss), np.stack(stats), np.stack(masks))
    pos = np.concatenate([np.ones(len(mem_idx), bool), np.zeros(len(non_idx), bool)])
    return {"auc": auc(scores, pos), "tpr_at_1pct_fpr": tpr_at_fpr(scores, pos, 0.01),
            "shadows": float(len(masks))}


def _class_centroids(manifest: Manifest, server_weights: tuple[npt.NDArray[np.float32], ...],
                     rows: npt.NDArray[np.float64], labels: npt.NDArray[np.int64],
                     k: int) -> npt.NDArray[np.float64]:
    """Mean gradient direction per class of auxiliary rows through the final server half."""
    srv = ServerRuntime.from_manifest(manifest)  # a throwaway copy: lr 0 changes no weight
    srv.set_weights(server_weights)
    acts = rows.astype(np.float32).reshape(len(rows), *manifest.activation_shape)
    b = manifest.max_batch
    gs = []
    for i in range(0, len(acts), b):
        _, g = srv.train(acts[i:i + b], labels[i:i + b].astype(np.int32), lr=0.0)
        gs.append(g.reshape(len(g), -1).astype(np.float64))
    g_all = np.concatenate(gs)
    g_all /= np.maximum(np.linalg.norm(g_all, axis=1, keepdims=True), 1e-30)
    d = g_all.shape[1]
    return np.stack([g_all[labels == c].mean(axis=0) if (labels == c).any() else np.zeros(d)
                     for c in range(k)])


def privacy_for(mode: str, epsilon: float, *, epochs: int, delta: float = 1e-5,
                label_epsilon: float | None = None) -> PrivacySection:
    """A device privacy section whose planned spend over ``epochs`` is ``epsilon``.

    ``epsilon = inf`` is the explicit non-private mode ``none``. In ``sl-dpsgd``
    every record is charged twice per epoch (its row and the DP-SGD step of its
    batch) at the same noise multiplier. ``label_epsilon`` None = labels public.
    """
    from agent.privacy.calibrate import noise_multiplier_for_budget

    labels: Literal["public", "randomized_response"] = (
        "public" if label_epsilon is None else "randomized_response")
    if not np.isfinite(epsilon):
        return PrivacySection(epsilon_budget=1e9, mode="none", delta=delta, labels=labels,
                              label_epsilon=label_epsilon)
    releases = epochs * (2 if mode == "sl-dpsgd" else 1)
    lab = None if label_epsilon is None else label_epsilon * epochs / releases
    z = noise_multiplier_for_budget(epsilon=epsilon, delta=delta, releases_per_record=releases,
                                    label_epsilon=lab)
    return PrivacySection(epsilon_budget=epsilon * (1 + 1e-6), mode=mode,  # type: ignore[arg-type]
                          delta=delta, noise_multiplier=z, labels=labels,
                          label_epsilon=label_epsilon, dp_sgd_noise_multiplier=z)
