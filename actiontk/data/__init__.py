"""Datasets that the training stages read from the cache.

- :mod:`actiontk.data.clips`: fixed-length clips of consecutive frames over a feature cache run, the batch
  collation for them, and the deterministic epoch sampler the training engine shuffles with.

Nothing is imported here on purpose: torch takes seconds to import and the CLI imports stage modules only
inside the commands that need them.
"""
