"""iiot-splitfed models: split halves that train on-device in LiteRT.

Run time (no TensorFlow): :mod:`models.manifest` (artifact manifests, weight
hash), :mod:`models.runtime` (``ClientRuntime`` / ``ServerRuntime``),
:mod:`models.preprocess`, :mod:`models.tflite_ops`, :mod:`models.fedavg`
(sample-weighted averaging), :mod:`models.evaluate` (held-out accuracy),
:mod:`models.clip` (per-record L2 clipping). Build time (TensorFlow,
``[build]`` extra): :mod:`models.spec` (architectures, pure), :mod:`models.zoo`,
:mod:`models.export`, :mod:`models.reference`, :mod:`models.baseline`.
Datasets: :mod:`models.datasets`. See ``docs/models.md``.
"""
