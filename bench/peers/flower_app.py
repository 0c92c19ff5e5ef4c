"""FedAvg in Flower on the same Keras model and split (runs inside ``.venv-flower``).

Theory of operation: ``python -m bench.peers.flower_app JOB OUT`` reads a
:class:`bench.peers.job.FlowerJob`, starts Flower's simulation engine (Ray)
with one virtual SuperNode per device of the stack's plan and runs FedAvg for
``job.rounds`` rounds. Every round each ClientApp loads the global weights
into the zoo architecture as a Keras model (:func:`models.reference.keras_model`),
takes ``steps_per_round`` mini-batches of ``batch_size`` from its own
partition (a fresh seeded permutation per pass, as a device iterates epochs
over what it holds) with SGD on the layers below the cut and Adam (state
reset every round) above it, the optimisers of our halves, and replies with
its weights. With a noise multiplier the strategy is wrapped in Flower's
``DifferentialPrivacyClientSideFixedClipping`` and the ClientApp gets
``fixedclipping_mod``: clients clip their update to ``clipping_norm``, the
server adds N(0, (z C / n)^2) to the average. Every client reports the same
weight (steps x batch), so FedAvg is the uniform mean Flower's noise scale
assumes. The ServerApp evaluates the global model on the job's held-out test
indices before round 1 and after every round; ``OUT`` receives per-round
accuracy, loss, wall time, and per client-round CPU seconds (process CPU of
the Ray worker during the call), peak RSS of the worker and the bytes of the
ArrayRecords received and sent.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.peers.job import FlowerJob

JOB_ENV = "SPLITFED_FLOWER_JOB"
OUT_ENV = "SPLITFED_FLOWER_OUT"
_CACHE: dict[str, Any] = {}


def _job() -> FlowerJob:
    if "job" not in _CACHE:
        _CACHE["job"] = FlowerJob.from_json(Path(os.environ[JOB_ENV]).read_text())
    job: FlowerJob = _CACHE["job"]
    return job


def _data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Normalised train/test windows, as the manifest's constants normalise them."""
    if "data" not in _CACHE:
        from models.data import WindowConfig, load_windows

        job = _job()
        win = load_windows(WindowConfig(dataset=job.dataset, length=job.window_length,
                                        mode=job.window_mode,  # type: ignore[arg-type]
                                        per_window=job.per_window), data_dir=job.data_dir)
        x_train, x_test = win.normalised()
        _CACHE["data"] = (x_train, win.y_train, x_test, win.y_test, win.num_classes)
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int] = _CACHE["data"]
    return data


class _Trainer:
    """One Keras model per process, reused across rounds and clients (no retracing)."""

    def __init__(self, job: FlowerJob, input_shape: tuple[int, int], num_classes: int) -> None:
        import keras
        import tensorflow as tf

        from models.reference import keras_model
        from models.spec import model_spec
        from models.zoo import initial_weights

        self.tf = tf
        self.spec = model_spec(job.model, input_shape=input_shape, num_classes=num_classes)
        self.initial = initial_weights(self.spec, seed=job.seed)
        self.model = keras_model(self.spec, self.initial)
        n_client = 2 * job.cut
        self.client_vars = self.model.trainable_variables[:n_client]
        self.server_vars = self.model.trainable_variables[n_client:]
        self.sgd = keras.optimizers.SGD(learning_rate=job.client_lr)
        self.adam = keras.optimizers.Adam(learning_rate=job.server_lr, epsilon=1e-7)
        self.adam.build(self.server_vars)
        # restored every round: zero moments and step count, the learning rate kept
        self.adam_initial = [np.asarray(v) for v in self.adam.variables]
        self._step = tf.function(self._train_step, reduce_retracing=True)
        self._logits = tf.function(lambda x: self.model(x, training=False), reduce_retracing=True)

    def _train_step(self, x: Any, y: Any) -> Any:
        tf = self.tf
        with tf.GradientTape() as tape:
            logits = self.model(x, training=True)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        grads = tape.gradient(loss, [*self.client_vars, *self.server_vars])
        n = len(self.client_vars)
        self.sgd.apply(grads[:n], self.client_vars)
        self.adam.apply(grads[n:], self.server_vars)
        return loss

    def keras_weights(self) -> list[np.ndarray]:
        return [np.asarray(w) for w in self.model.get_weights()]

    def train(self, weights: list[np.ndarray], x: np.ndarray, y: np.ndarray, *, steps: int,
              batch: int, rng: np.random.Generator) -> tuple[list[np.ndarray], float]:
        self.model.set_weights(weights)
        for v, init in zip(self.adam.variables, self.adam_initial, strict=True):
            v.assign(init)  # a fresh Adam every round (FedAvg local training)
        order: list[int] = []
        loss = float("nan")
        for _ in range(steps):
            while len(order) < batch:
                order += [int(i) for i in rng.permutation(len(x))]
            idx, order = order[:batch], order[batch:]
            loss = float(self._step(self.tf.constant(x[idx]), self.tf.constant(y[idx])))
        return self.keras_weights(), loss

    def accuracy(self, weights: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> tuple[float,
                                                                                        float]:
        tf = self.tf
        self.model.set_weights(weights)
        logits = self._logits(tf.constant(x))
        loss = float(tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.constant(y), logits=logits)))
        return float(np.mean(np.argmax(np.asarray(logits), axis=1) == y)), loss


def _trainer() -> _Trainer:
    if "trainer" not in _CACHE:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        x_train, _, _, _, k = _data()
        _CACHE["trainer"] = _Trainer(_job(), (x_train.shape[1], x_train.shape[2]), k)
    trainer: _Trainer = _CACHE["trainer"]
    return trainer


def _record_bytes(record: Any) -> int:
    """Bytes of the serialised arrays in an ArrayRecord (Flower's ``Array.data``)."""
    return sum(len(arr.data) for arr in record.values())


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def client_app() -> Any:
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.clientapp.mod import fixedclipping_mod

    mods = [fixedclipping_mod] if _job().noise_multiplier is not None else []
    app = ClientApp(mods=mods)

    @app.train()  # type: ignore[untyped-decorator, unused-ignore]
    def train(msg: Message, context: Context) -> Message:
        cpu0 = time.process_time()
        job = _job()
        pid = int(context.node_config["partition-id"])
        server_round = int(msg.content["config"]["server-round"])
        x_train, y_train, _, _, _ = _data()
        idx = np.asarray(job.partitions[pid])
        received = msg.content["arrays"]
        rng = np.random.default_rng([job.seed, pid, server_round])
        weights, loss = _trainer().train(received.to_numpy_ndarrays(), x_train[idx],
                                         y_train[idx].astype(np.int32),
                                         steps=job.steps_per_round, batch=job.batch_size, rng=rng)
        reply = ArrayRecord(weights)
        metrics = MetricRecord({
            "num-examples": job.steps_per_round * job.batch_size, "train_loss": loss,
            "cpu_s": time.process_time() - cpu0, "bytes_in": _record_bytes(received),
            "bytes_out": _record_bytes(reply), "peak_rss_mib": _peak_rss_mib()})
        return Message(content=RecordDict({"arrays": reply, "metrics": metrics}), reply_to=msg)

    return app


def server_app(out: dict[str, Any]) -> Any:
    from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import (
        DifferentialPrivacyClientSideFixedClipping,
        FedAvg,
    )

    app = ServerApp()
    job = _job()
    n = len(job.devices)

    @app.main()  # type: ignore[untyped-decorator, unused-ignore]
    def main(grid: Grid, context: Context) -> None:
        _, _, x_test, y_test, _ = _data()
        ev = np.asarray(job.eval_indices)
        trainer = _trainer()
        t0 = time.monotonic()
        rounds: list[dict[str, float]] = []

        def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            acc, loss = trainer.accuracy(arrays.to_numpy_ndarrays(), x_test[ev],
                                         y_test[ev].astype(np.int32))
            now = time.monotonic()
            rounds.append({"round": server_round, "accuracy": acc, "loss": loss,
                           "wall_s": now - t0,
                           "since_launch_s": now - _CACHE.get("t_launch", t0)})
            return MetricRecord({"accuracy": acc, "loss": loss})

        strategy: Any = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n,
                               min_available_nodes=n, train_metrics_aggr_fn=_per_client)
        if job.noise_multiplier is not None:
            strategy = DifferentialPrivacyClientSideFixedClipping(
                strategy, job.noise_multiplier, job.clipping_norm, n)
        result = strategy.start(grid=grid, initial_arrays=ArrayRecord(trainer.keras_weights()),
                                num_rounds=job.rounds, train_config=ConfigRecord({}),
                                evaluate_fn=evaluate)
        out["rounds"] = rounds
        out["clients"] = {str(r): dict(m) for r, m in result.train_metrics_clientapp.items()}
        out["wall_s"] = time.monotonic() - t0
        if os.environ.get(OUT_ENV):  # deployment engine: the ServerApp is its own process
            Path(os.environ[OUT_ENV]).write_text(json.dumps(out, indent=1))

    return app


def _per_client(records: list[Any], weighting: str) -> Any:
    """Mean of each client metric, max of ``peak_rss_mib`` (FedAvg's default only averages)."""
    from flwr.app import MetricRecord

    metrics = [next(iter(r.metric_records.values())) for r in records]
    agg: dict[str, float] = {"clients": float(len(metrics))}
    for key in metrics[0]:
        values = [float(m[key]) for m in metrics]
        agg[key] = max(values) if key == "peak_rss_mib" else float(np.mean(values))
    return MetricRecord(agg)


def main(argv: list[str]) -> int:
    _CACHE["t_launch"] = time.monotonic()
    job_path, out_path = Path(argv[0]), Path(argv[1])
    os.environ[JOB_ENV] = str(job_path.resolve())
    from flwr.simulation import run_simulation

    job = _job()
    out: dict[str, Any] = {"name": job.name, "epsilon": job.epsilon,
                           "noise_multiplier": job.noise_multiplier,
                           "clipping_norm": job.clipping_norm}
    t0 = _CACHE["t_launch"]
    run_simulation(server_app=server_app(out), client_app=client_app(),
                   num_supernodes=len(job.devices),
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": 2, "include_dashboard": False}})
    out["total_s"] = time.monotonic() - t0
    out["server_peak_rss_mib"] = _peak_rss_mib()
    if "rounds" not in out:
        print("flower run produced no rounds (see log above)", file=sys.stderr)
        return 1
    out_path.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    # Run through the importable module, not ``__main__``: Ray pickles the apps' functions by
    # reference only when their module can be imported by name in its workers.
    from bench.peers import flower_app

    sys.exit(flower_app.main(sys.argv[1:]))
