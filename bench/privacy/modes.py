"""The private training modes, simulated in one process with the agent's own mechanisms.

Every mode trains on a :class:`bench.privacy.tasks.Task` with the LiteRT
artifacts (:class:`models.runtime.ClientRuntime` / ``ServerRuntime``,
:class:`models.full_runtime.FullRuntime`) and the device mechanisms of
:mod:`agent.privacy.mechanisms` and :mod:`agent.privacy.dpfedavg`; only the
network is missing. Generators are seeded per (seed, device) for
reproducibility; the agent uses ``secure_rng()`` instead. ``epsilon=None``
runs the same mode without noise or label randomisation.

* ``fl-dpsgd``: each device runs ``local_steps`` Poisson-sampled DP-SGD steps
  on the whole model per round (:func:`agent.privacy.dpfedavg.dp_fedavg_round`),
  the server averages the updates (equal weights) and applies the mean with
  ``server_lr`` (FedAvg, optionally with momentum) or FedAdam, and the model
  evaluated is an exponential moving average of the rounds' global weights
  (``ema``; 0 = the last round's). All of it is post-processing.
  z is calibrated with dp_accounting PLD for ``rounds * local_steps`` steps
  at ``q`` under replace-one adjacency. The epsilon covers x and y of every
  record (labels never leave the device).
* ``sl-frozen``: the client half stays at the shipped weights; every record's
  activation row is released ``releases`` times with the Gaussian mechanism
  (``privatize_activations``, C = 1, rows are unit norm) and its label once
  with k-ary randomized response at ``label_share * epsilon``; the server
  trains its half on the received rows for ``passes`` passes (post-processing).
  z from the agent's own calibration (:mod:`agent.privacy.calibrate`). Plain
  cross-entropy on RR labels: symmetric RR keeps the arg-max of p(y|x), so
  the label noise costs signal, not consistency (no correction used).
* ``sl-dpsgd`` (SIMULATED with the lead's formulas; the agent code is not in
  this branch): per epoch each device's records are dealt into disjoint
  batches; per batch the rows are released (Gaussian, as above), the server
  trains on them and returns dL/d(rows), and the client half takes one DP-SGD
  step (``dp_sgd_aggregate``: per-example clip, noise, mean) charged only to
  the records of that batch. Per record and epoch: one row release and one
  DP-SGD step; labels once by RR. Client halves are averaged after every epoch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from agent.privacy.calibrate import noise_multiplier_for_budget
from agent.privacy.dpfedavg import DpFedAvgParams, dp_fedavg_round, noise_multiplier_for
from agent.privacy.mechanisms import dp_sgd_aggregate, privatize_activations, randomized_response
from bench.privacy.tasks import Task
from models.full_runtime import FullRuntime
from models.runtime import ClientRuntime, ServerRuntime

log = logging.getLogger(__name__)

DELTA = 1e-5
THREADS = 1


@dataclass(frozen=True, slots=True)
class FlHp:
    q: float
    rounds: int
    local_steps: int
    lr: float
    clip: float
    server_lr: float = 1.0
    server_momentum: float = 0.0
    server_adam: bool = False  # FedAdam (Reddi et al. 2021), tau = 1e-3; else FedAvg(+momentum)
    ema: float = 0.0  # evaluate an exponential moving average of the global weights per round


@dataclass(frozen=True, slots=True)
class SlHp:
    releases: int
    label_share: float
    passes: int
    server_lr: float


@dataclass(frozen=True, slots=True)
class SlDpHp:
    epochs: int
    batch: int
    client_lr: float
    clip: float
    server_lr: float
    label_share: float


def _chunks(n: int, size: int) -> Iterator[slice]:
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))


def accuracy_full(rt: FullRuntime, x: np.ndarray, y: np.ndarray) -> float:
    pred = np.concatenate([rt.predict(x[s]).argmax(axis=1) for s in _chunks(len(y), 32)])
    return float(np.mean(pred == y))


def accuracy_split(client: ClientRuntime, server: ServerRuntime, x: np.ndarray,
                   y: np.ndarray) -> float:
    pred = np.concatenate([server.predict(client.forward(x[s])).argmax(axis=1)
                           for s in _chunks(len(y), 32)])
    return float(np.mean(pred == y))


def _initial(task: Task, seed: int) -> list[np.ndarray]:
    from models.spec import model_spec
    from models.zoo import initial_weights

    m = task.full
    spec = model_spec(m.model_id, input_shape=m.input_shape, num_classes=m.num_classes)
    return initial_weights(spec, seed=seed)


@lru_cache(maxsize=256)
def fl_noise(q: float, steps: int, epsilon: float) -> float:
    return noise_multiplier_for(sampling_prob=q, steps=steps, epsilon=epsilon, delta=DELTA,
                                adjacency="replace", rel_tol=1e-2,
                                value_discretization_interval=1e-3)


def run_fl_dpsgd(task: Task, epsilon: float | None, seed: int, hp: FlHp) -> dict[str, float]:
    z = 0.0 if epsilon is None else fl_noise(hp.q, hp.rounds * hp.local_steps, epsilon)
    params = DpFedAvgParams(sampling_prob=hp.q, noise_multiplier=z, clip_norm=hp.clip,
                            local_steps=hp.local_steps, lr=hp.lr)
    rt = FullRuntime.from_manifest(task.full, num_threads=THREADS)
    glob = [w.astype(np.float64) for w in _initial(task, seed)]
    rngs = [np.random.default_rng([seed, d]) for d in range(len(task.devices))]
    ids = [list(range(len(y))) for _, y in task.devices]
    mom = [np.zeros_like(w) for w in glob]
    sq = [np.zeros_like(w) for w in glob]
    avg = [w.copy() for w in glob]
    for _ in range(hp.rounds):
        total = [np.zeros_like(w) for w in glob]
        for d, (x, y) in enumerate(task.devices):
            res = dp_fedavg_round(rt, ids=ids[d], x=x, y=y, global_weights=glob, params=params,
                                  rng=rngs[d], non_private=epsilon is None)
            for t, u in zip(total, res.update, strict=True):
                t += u
        delta = [t / len(task.devices) for t in total]  # post-processing of DP updates
        if hp.server_adam:
            mom = [0.9 * m + 0.1 * d for m, d in zip(mom, delta, strict=True)]
            sq = [0.99 * v + 0.01 * d * d for v, d in zip(sq, delta, strict=True)]
            glob = [w + hp.server_lr * m / (np.sqrt(v) + 1e-3)
                    for w, m, v in zip(glob, mom, sq, strict=True)]
        else:
            mom = [hp.server_momentum * m + d for m, d in zip(mom, delta, strict=True)]
            glob = [w + hp.server_lr * m for w, m in zip(glob, mom, strict=True)]
        avg = [hp.ema * a + (1.0 - hp.ema) * w for a, w in zip(avg, glob, strict=True)]
    rt.set_weights(avg)
    return {"accuracy": accuracy_full(rt, task.x_test, task.y_test), "noise_multiplier": z}


def sl_noise(epsilon: float, releases: int, label_eps: float | None) -> float:
    return noise_multiplier_for_budget(epsilon=epsilon, delta=DELTA, releases_per_record=releases,
                                       adjacency="replace",
                                       label_epsilon=None if label_eps is None
                                       else label_eps / releases)


def _server(task: Task, seed: int) -> ServerRuntime:
    server = ServerRuntime.from_manifest(task.split, num_threads=THREADS)
    server.set_weights(_initial(task, seed)[2 * task.split.cut:])
    server.reset_optimizer()
    return server


def _train_server(server: ServerRuntime, rows: np.ndarray, labels: np.ndarray, *, passes: int,
                  lr: float, rng: np.random.Generator) -> None:
    for _ in range(passes):
        perm = rng.permutation(len(labels))
        for s in _chunks(len(perm), 32):
            idx = perm[s]
            server.train(rows[idx], labels[idx], lr=lr)


def run_sl_frozen(task: Task, epsilon: float | None, seed: int, hp: SlHp) -> dict[str, float]:
    client = ClientRuntime.from_manifest(task.split, num_threads=THREADS)  # shipped, frozen
    server = _server(task, seed)
    k = task.num_classes
    releases = 1 if epsilon is None else hp.releases
    label_eps = None if epsilon is None or hp.label_share <= 0 else hp.label_share * epsilon
    z = 0.0 if epsilon is None else sl_noise(epsilon, releases, label_eps)
    rows_all, labels_all = [], []
    for d, (x, y) in enumerate(task.devices):
        rng = np.random.default_rng([seed, d, 1])
        act = np.concatenate([client.forward(x[s]) for s in _chunks(len(y), 32)])
        labels = y if label_eps is None else randomized_response(y, k=k, epsilon=label_eps,
                                                                 rng=rng)
        for _ in range(releases):
            rows = act if epsilon is None else privatize_activations(
                act, clip_norm=1.0, noise_multiplier=z, rng=rng)
            rows_all.append(np.asarray(rows, np.float32))
            labels_all.append(labels.astype(np.int32))
    _train_server(server, np.concatenate(rows_all), np.concatenate(labels_all),
                  passes=hp.passes, lr=hp.server_lr, rng=np.random.default_rng([seed, 99]))
    return {"accuracy": accuracy_split(client, server, task.x_test, task.y_test),
            "noise_multiplier": z, "label_epsilon": label_eps or 0.0}


def run_sl_dpsgd(task: Task, epsilon: float | None, seed: int, hp: SlDpHp) -> dict[str, float]:
    k = task.num_classes
    label_eps = None if epsilon is None or hp.label_share <= 0 else hp.label_share * epsilon
    # per record: `epochs` row releases + `epochs` DP-SGD steps, same z; labels once
    z = 0.0 if epsilon is None else sl_noise(epsilon, 2 * hp.epochs, label_eps)
    clients = [ClientRuntime.from_manifest(task.split, num_threads=THREADS)
               for _ in task.devices]
    start = _initial(task, seed)[:2 * task.split.cut]
    for c in clients:
        c.set_weights(start)
    server = _server(task, seed)
    rngs = [np.random.default_rng([seed, d, 2]) for d in range(len(task.devices))]
    labels = [y if label_eps is None else randomized_response(y, k=k, epsilon=label_eps,
                                                              rng=rngs[d]).astype(np.int64)
              for d, (_, y) in enumerate(task.devices)]
    for _ in range(hp.epochs):
        orders = [rngs[d].permutation(len(y)) for d, (_, y) in enumerate(task.devices)]
        batches = [list(_chunks(len(o), hp.batch)) for o in orders]
        for b in range(max(len(bs) for bs in batches)):
            for d, (x, _) in enumerate(task.devices):
                if b >= len(batches[d]):
                    continue
                idx = orders[d][batches[d][b]]
                xb = x[idx]
                act = clients[d].forward(xb)
                rows = act if epsilon is None else np.asarray(privatize_activations(
                    act, clip_norm=1.0, noise_multiplier=z, rng=rngs[d]), np.float32)
                _, dact = server.train(rows, labels[d][idx].astype(np.int32), lr=hp.server_lr)
                per = clients[d].grads(xb, dact * len(idx))  # each example's own loss
                if epsilon is None:
                    flat = [p.astype(np.float64) for p in per]
                    norms = np.sqrt(sum((f.reshape(len(idx), -1) ** 2).sum(1) for f in flat))
                    scale = np.minimum(1.0, hp.clip / np.maximum(norms, 1e-12))
                    g = [(f * scale.reshape(-1, *([1] * (f.ndim - 1)))).mean(0) for f in flat]
                else:
                    g = list(dp_sgd_aggregate(per, clip_norm=hp.clip, noise_multiplier=z,
                                              rng=rngs[d]))
                clients[d].apply(g, lr=hp.client_lr)
        mean = [np.mean(ws, axis=0) for ws in zip(*(c.get_weights() for c in clients),
                                                  strict=True)]
        for c in clients:
            c.set_weights(mean)
    return {"accuracy": accuracy_split(clients[0], server, task.x_test, task.y_test),
            "noise_multiplier": z, "label_epsilon": label_eps or 0.0}


def run_centralized(task: Task, seed: int, *, epochs: int, client_lr: float = 0.1,
                    server_lr: float = 5e-3) -> float:
    """Non-private, all records in one place: the project's baseline recipe (models.baseline)."""
    client = ClientRuntime.from_manifest(task.split, num_threads=THREADS)
    ws = _initial(task, seed)
    client.set_weights(ws[:2 * task.split.cut])
    server = _server(task, seed)
    x, y = task.all_train()
    rng = np.random.default_rng([seed, 7])
    for _ in range(epochs):
        perm = rng.permutation(len(y))
        for s in _chunks(len(y), 32):
            idx = perm[s]
            _, grad = server.train(client.forward(x[idx]), y[idx].astype(np.int32),
                                   lr=server_lr)
            client.backward(x[idx], grad, lr=client_lr)
    return accuracy_split(client, server, task.x_test, task.y_test)


def epochs_of(hp: FlHp) -> float:
    """Expected passes over each record's data in an fl-dpsgd run."""
    return hp.q * hp.rounds * hp.local_steps


def fmt_pm(values: list[float]) -> str:
    if not values:
        return "-"
    m = float(np.mean(values))
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return f"{m:.3f} ± {sd:.3f}"


def guarantee(mode: str, epsilon: float | None, label_share: float = 0.0) -> str:
    if epsilon is None:
        return "none (non-private)"
    if mode == "fl-dpsgd":
        return (f"(ε={epsilon:g}, δ={DELTA:g}) on x and y, record-level, replace-one; "
                "PLD accounting of every released update")
    y_part = (f"y by RR at ε={label_share * epsilon:g}" if label_share > 0
              else "y NOT covered (sent in the clear)")
    return (f"(ε={epsilon:g}, δ={DELTA:g}) record-level, replace-one, agent zCDP accountant: "
            f"x and {y_part}")


def is_finite(v: float) -> bool:
    return math.isfinite(v)
