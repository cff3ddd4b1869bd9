"""Build hook: the dataset presets (top-level ``stages/*.toml``) go into the built package as ``actiontk/presets``.

Everything else about the package is in pyproject.toml. The presets stay in ``stages/`` in the repository, where
users read and override them; an installed actiontk (a wheel, a non-editable install) has no checkout around it,
so it reads the copies this hook puts inside the package (see ``actiontk.config.presets_dir``).
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithPresets(build_py):
    def run(self) -> None:
        super().run()
        source = Path(__file__).resolve().parent / "stages"
        presets = sorted(source.glob("*.toml"))
        if not presets:
            raise SystemExit(f"no presets in {source}: the package would run every dataset on the dataclass defaults")
        target = Path(self.build_lib) / "actiontk" / "presets"
        self.mkpath(str(target))
        for path in presets:
            self.copy_file(str(path), str(target / path.name))


setup(cmdclass={"build_py": BuildPyWithPresets})
