"""Datasets that the training stages read from the cache.

- :mod:`actiontk.data.clips`: fixed-length clips of consecutive frames over a feature cache run, the batch
  collation for them, and the deterministic epoch sampler the training engine shuffles with.
- :mod:`actiontk.data.pose`: keypoint-heatmap targets for the GAP head's pose branch (MPII), and the
  resize/crop/flip geometry they are drawn in.
- :mod:`actiontk.data.gap_items`: still images as ``train-gap`` items (cached maps, or fine-tuning crops), with
  their pose targets.
- :mod:`actiontk.data.images`: still images read upright (EXIF orientation applied).

Nothing is imported here on purpose: torch takes seconds to import and the CLI imports stage modules only
inside the commands that need them.
"""
