"""The pipeline stages, one module each, and what they share.

- :mod:`~actiontk.stages.registry`: one :class:`~actiontk.stages.registry.Stage` record per stage (name, schema
  version, config class, upstream stages, completion, entry point), the one place a stage is registered.
- The stages: :mod:`~actiontk.stages.extract` (a frozen backbone's feature maps of a dataset's frames or images),
  :mod:`~actiontk.stages.train_3d` (the multi-level 3D convnet, and the cubes it writes for the LSTM),
  :mod:`~actiontk.stages.train_lstm` (the joint attention LSTM on those cubes), :mod:`~actiontk.stages.train_gap`
  (attentional pooling on still images) and :mod:`~actiontk.stages.evaluate` (the metrics of a trained run).
- :mod:`~actiontk.stages.pipeline`: the video and image pipelines (``actiontk run``, ``actiontk demo``), stage
  after stage; :mod:`~actiontk.stages.upstream` chooses the run a stage reads; :mod:`~actiontk.stages.common`
  holds what the training stages share.

Stages sit below the report and the command layer and import neither (``tests/test_layering.py``): they return
runs and results, which ``actiontk.commands`` renders; a pipeline is handed its report writer.
"""
