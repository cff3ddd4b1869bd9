"""Models: frozen CNN backbones that tap intermediate feature maps (:mod:`actiontk.models.backbones`).

Nothing is imported here on purpose: torch and torchvision take seconds to import, and the CLI imports
this package's modules only inside the commands that need them.
"""
