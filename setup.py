"""Build step: the suite's run-time files that are not Python go into the wheel below
kubeprobe/_data/, with their paths in the repository (kubeprobe/resources.py reads them
there). The repository layout stays as it is; everything else is in pyproject.toml."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# Files, or directories taken whole; paths relative to the repository root.
DATA = ("kind-config.yaml", "fixtures", "docs/controls.md", "agent/go.mod", "agent/main.go",
        "build/etcd", "build/kubernetes",  # one wrapper module per version (go.mod + go.sum)
        "build/pause/go.mod", "build/pause/main.go")


def data_files() -> list[Path]:
    found = []
    for name in DATA:
        path = ROOT / name
        found += [path] if path.is_file() else sorted(
            p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return found


class BuildPyWithData(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):  # editable: the checkout is read in place
            return
        target = Path(self.build_lib) / "kubeprobe" / "_data"
        for path in data_files():
            dst = target / path.relative_to(ROOT)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dst)


# Not the default build/: that directory holds the lab's Go wrapper modules.
setup(cmdclass={"build_py": BuildPyWithData},
      options={"build": {"build_base": ".build-python"}})
