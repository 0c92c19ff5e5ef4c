"""Model halves: LiteRT vs the same graphs in TensorFlow, sizes, edge RSS, central accuracy.

Run: ``.venv/bin/python -m bench models`` (needs the ``[build]`` extra).

Timings are per call, measured side by side in one process. "window" is a
batch of one row: the production artifacts (``max_batch`` 32) run ``forward``
and ``predict`` through their batch-1 signatures but pad training calls to 32
rows, so a second LiteRT column (``litert_b1``) uses an export with
``max_batch`` 1 throughout. The TF
column runs the identical zoo graphs (``tf.function`` of the same methods that
were converted), so the ratio is runtime vs runtime, not model vs model.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import peak_rss_mib, time_per_call, write_results
from models.baseline import TrainConfig, run_baseline
from models.data import default_window
from models.export import export_pair
from models.manifest import Manifest, list_artifacts
from models.runtime import ClientRuntime, ServerRuntime
from models.spec import model_spec
from models.zoo import build_halves

REPO = Path(__file__).resolve().parent.parent

# ru_maxrss survives fork+exec on Linux (the child would report the parent's peak), so the
# children read their own high-water mark, VmHWM, which starts afresh at exec.
_HWM = """
def hwm_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
"""

_EDGE = _HWM + """
import json, sys
import numpy as np
from models.runtime import ClientRuntime
from models.manifest import artifact_dir
c = ClientRuntime.from_manifest(artifact_dir(sys.argv[1], int(sys.argv[2])))
m = c.manifest
x = np.zeros((m.max_batch, *m.input_shape), np.float32)
g = np.zeros((m.max_batch, *m.activation_shape), np.float32)
for _ in range(10):
    c.forward(x); c.backward(x, g, lr=0.01); c.grads(x, g)
print(json.dumps({"rss": hwm_mib(), "tf": "tensorflow" in sys.modules}))
"""

_BARE = _HWM + "import json, numpy; print(json.dumps({'rss': hwm_mib()}))"

_TF = _HWM + "import json, tensorflow; print(json.dumps({'rss': hwm_mib()}))"


def _subprocess_rss(code: str, *args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True,
                         text=True, check=True, timeout=300).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _litert_calls(m: Manifest, b: int) -> dict[str, Any]:
    client = ClientRuntime.from_manifest(m, num_threads=1)
    server = ServerRuntime.from_manifest(m, num_threads=1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((b, *m.input_shape)).astype(np.float32)
    y = rng.integers(0, m.num_classes, b)
    a = client.forward(x)
    g = (rng.standard_normal(a.shape) * 1e-3).astype(np.float32)
    return {"forward": lambda: client.forward(x),
            "backward": lambda: client.backward(x, g, lr=0.0),
            "grads": lambda: client.grads(x, g),
            "server_train": lambda: server.train(a, y, lr=0.0)}


def _tf_calls(m: Manifest, b: int) -> dict[str, Any]:
    import tensorflow as tf

    spec = model_spec(m.model_id, input_shape=m.input_shape, num_classes=m.num_classes)
    client, server = build_halves(spec, m.cut, max_batch=b, seed=0)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((b, *m.input_shape)).astype(np.float32))
    y = tf.constant(rng.integers(0, m.num_classes, b).astype(np.int32))
    a = client.sig_fns["forward"](x)["activations"]
    g = tf.constant((rng.standard_normal(a.shape) * 1e-3).astype(np.float32))
    lr = tf.constant(0.0)
    return {"forward": lambda: client.sig_fns["forward"](x)["activations"].numpy(),
            "backward": lambda: client.sig_fns["backward"](x, g, lr),
            "grads": lambda: [t.numpy() for t in client.sig_fns["grads"](x, g).values()],
            "server_train": lambda: server.sig_fns["train"](a, y, lr)["loss"].numpy()}


def _timings(table: list[tuple[str, str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-models-") as tmp:
        for m in list_artifacts():
            key = f"{m.model_id}/cut{m.cut}"
            spec = model_spec(m.model_id, input_shape=m.input_shape, num_classes=m.num_classes)
            one = export_pair(spec, m.cut, out_dir=Path(tmp) / key, max_batch=1, seed=m.seed,
                              norm_mean=m.norm_mean, norm_std=m.norm_std,
                              norm_per_window=m.norm_per_window, dataset=m.dataset,
                              window=m.window)
            rows = {
                "window": {"litert": _litert_calls(m, 1), "litert_b1": _litert_calls(one, 1),
                           "tf": _tf_calls(m, 1)},
                f"batch{m.max_batch}": {"litert": _litert_calls(m, m.max_batch),
                                        "tf": _tf_calls(m, m.max_batch)},
            }
            out[key] = {}
            for scope, backends in rows.items():
                for op in ("forward", "backward", "grads", "server_train"):
                    us = {name: time_per_call(calls[op], min_time=0.2) * 1e6
                          for name, calls in backends.items()}
                    out[key][f"{scope}/{op}_us"] = us
                    ratio = us["tf"] / us["litert"]
                    table.append((f"{key} {scope} {op} (us)",
                                  " / ".join(f"{n} {v:.0f}" for n, v in us.items())
                                  + f" ; TF/LiteRT(production) {ratio:.1f}x"))
    return out


def main() -> None:
    table: list[tuple[str, str]] = []
    data: dict[str, Any] = {"sizes_bytes": {}, "timings": _timings(table)}
    for m in list_artifacts():
        for name in (m.client_file, m.server_file):
            size = (m.directory / name).stat().st_size
            data["sizes_bytes"][f"{m.model_id}/cut{m.cut}/{name}"] = size
            table.append((f"size {m.model_id}/cut{m.cut}/{name}", f"{size / 1024:.1f} KiB"))
    bare = _subprocess_rss(_BARE)["rss"]
    data["rss_mib"] = {"python_numpy": bare}
    table.append(("peak RSS python+numpy only", f"{bare:.1f} MiB"))
    with_tf = _subprocess_rss(_TF)["rss"]
    data["rss_mib"]["python_tensorflow_import"] = with_tf
    table.append(("peak RSS python importing tensorflow (for contrast)", f"{with_tf:.1f} MiB"))
    for mid, cut in (("cnn1d", 1), ("mlp", 1)):
        edge = _subprocess_rss(_EDGE, mid, str(cut))
        data["rss_mib"][f"client_only_{mid}_cut{cut}"] = edge["rss"]
        table.append((f"peak RSS client runtime only ({mid} cut{cut}, tf imported: {edge['tf']})",
                      f"{edge['rss']:.1f} MiB"))
    accuracy = []
    for dataset in ("PLAID", "ACSF1"):
        for mid, cut in (("cnn1d", 1), ("cnn1d", 2), ("mlp", 1), ("mlp", 2), ("mlp_dp", 1),
                         ("mlp_dp", 2)):
            r = run_baseline(mid, cut, default_window(dataset), TrainConfig(seed=0))
            accuracy.append(r)
            table.append((f"accuracy {dataset} {mid} cut{cut} (keras / litert)",
                          f"{r['keras']['accuracy']:.3f} / {r['litert']['accuracy']:.3f}"))
    data["accuracy"] = accuracy
    data["peak_rss_bench_process_mib"] = peak_rss_mib()
    write_results("models", data, table)


if __name__ == "__main__":
    main()
