"""The cache every stage uses the same way: content-keyed run directories under one cache root.

- :mod:`actiontk.cache.runs`: the cache root, run keys, run directories and their ``run.json``.
- :mod:`actiontk.cache.features`: the sharded, crash-safe HDF5 feature store of ``extract`` and its reader.
"""
