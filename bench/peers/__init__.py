"""Side-by-side benchmark of this system against Flower (``python -m bench peers``).

Modules:

* :mod:`bench.peers.job` (pure): the experiment both systems run: the stack's
  own non-IID split (:func:`deploy.stack.plan.make_plan`), the optimiser
  budget, and the Flower noise multiplier at matched epsilon.
* :mod:`bench.peers.flower_app`: runs INSIDE ``.venv-flower`` (flwr 1.42 pins
  protobuf/packaging below what the main venv holds): FedAvg on the same
  Keras architecture, Flower's simulation engine, optional client-side
  fixed-clipping DP.
* :mod:`bench.peers.flower_device`: one Flower SuperNode on loopback
  (deployment engine) with its process tree measured from ``/proc``.
* :mod:`bench.peers.runners`: adapters: the Flower venv, subprocesses, and
  ``splitfed demo`` for our side.
* :mod:`bench.peers.report` (pure): time to target accuracy and the table.
"""
