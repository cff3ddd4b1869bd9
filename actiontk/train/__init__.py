"""Training infrastructure shared by every training stage.

- :mod:`actiontk.train.engine`: :class:`~actiontk.train.engine.Trainer` and its
  :class:`~actiontk.train.engine.TrainConfig` — seeded, resumable (bit-identical on CPU), AMP on CUDA,
  DistributedDataParallel under ``torchrun``, atomic checkpoints and a ``metrics.jsonl`` log.

Nothing is imported here on purpose: torch takes seconds to import and the CLI imports stage modules only
inside the commands that need them.
"""
