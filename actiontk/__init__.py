__version__ = "0.1.0"


def __getattr__(name: str):
    # ``actiontk.load`` without importing torch at ``import actiontk``: the predict API is imported on first use.
    if name == "load":
        from actiontk.predict import load

        return load
    raise AttributeError(f"module 'actiontk' has no attribute {name!r}")
