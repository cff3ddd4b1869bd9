"""Applying a trained run to new videos and images: ``actiontk predict`` and ``actiontk.load()``.

- :mod:`actiontk.predict.api`: :func:`load`, :class:`Predictor`, :class:`Result` (the Python API);
- :mod:`actiontk.predict.rebuild`: the backbone, preprocessing and models rebuilt from a run and its upstream
  runs (their recorded configs and checkpoints);
- :mod:`actiontk.predict.buffer`: the bounded frame buffer that lets long videos stream;
- :mod:`actiontk.predict.overlay`: attention overlays (MP4 for videos, PNG for images);
- :mod:`actiontk.predict.index`: the self-contained ``index.html`` of a batch of predictions.

Importing this package is cheap; torch is imported when a run is loaded.
"""

from __future__ import annotations


def load(*args, **kwargs):
    """:func:`actiontk.predict.api.load` (see there)."""
    from actiontk.predict.api import load as _load

    return _load(*args, **kwargs)


__all__ = ["load"]
