"""iiot-splitfed models: split halves that train on-device in LiteRT.

Run time (no TensorFlow): :mod:`models.manifest` (artifact manifests, weight
hash), :mod:`models.runtime` (``ClientRuntime`` / ``ServerRuntime``),
:mod:`models.preprocess`, :mod:`models.tflite_ops`. Build time (TensorFlow,
``[build]`` extra): :mod:`models.spec` (architectures, pure), :mod:`models.zoo`,
:mod:`models.export`, :mod:`models.reference`, :mod:`models.baseline`.
Datasets: :mod:`models.datasets`. See ``docs/models.md``.
"""
