"""The distribution: three packages, typed, quiet on import, and a chromadb-free core."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pytest

import saga
from tests._probe import REPO

PACKAGES = {"saga", "steps", "stores"}
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "*.egg-info", "build", "dist", "__pycache__", ".*_cache"
)


def _python(code: str) -> str:
    """Run ``code`` in a fresh interpreter (nothing imported yet); return its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def _built_files(tmp_path: Path) -> list[str]:
    """The files the wheel installs, as paths relative to site-packages.

    With the ``wheel`` package a real wheel is built (offline, no isolation). Without
    it (setuptools < 70.1 needs it for ``bdist_wheel``), the tree is copied and
    ``build_py`` run: the very step that fills the wheel's purelib.
    """
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=_NOT_SOURCE)
    if importlib.util.find_spec("wheel") is not None:
        subprocess.run(
            [
                *(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"),
                *("--no-index", "-w", str(tmp_path / "dist"), str(source)),
            ],
            capture_output=True,
            check=True,
            timeout=120,
        )
        [wheel] = (tmp_path / "dist").glob("*.whl")
        with zipfile.ZipFile(wheel) as archive:
            names = archive.namelist()
        return [n for n in names if not n.split("/", 1)[0].endswith(".dist-info")]
    lib = tmp_path / "lib"
    subprocess.run(
        [
            *(sys.executable, "-c", "import setuptools; setuptools.setup()", "-q"),
            *("build_py", "--build-lib", str(lib)),
        ],
        cwd=source,
        capture_output=True,
        check=True,
        timeout=120,
    )
    return [p.relative_to(lib).as_posix() for p in lib.rglob("*") if p.is_file()]


@pytest.fixture(scope="module")
def built_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return _built_files(tmp_path_factory.mktemp("build"))


def test_the_wheel_holds_exactly_three_top_level_packages(built_files: list[str]) -> None:
    assert {name.split("/", 1)[0] for name in built_files} == PACKAGES


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_every_package_ships_py_typed(built_files: list[str], package: str) -> None:
    assert (REPO / package / "py.typed").is_file()
    assert f"{package}/py.typed" in built_files


def test_dunder_all_is_sorted_isort_style() -> None:
    """SCREAMING_CASE, then CamelCase, then the rest (ruff RUF022's order)."""

    def group(name: str) -> tuple[int, str]:
        if name.isupper():
            return (0, name)
        return (1 if name[:1].isupper() else 2, name)

    assert saga.__all__ == sorted(saga.__all__, key=group)
    assert len(set(saga.__all__)) == len(saga.__all__)


def test_dunder_all_names_only_what_exists() -> None:
    assert [name for name in saga.__all__ if not hasattr(saga, name)] == []


def test_dunder_all_is_the_public_namespace() -> None:
    public = {
        name
        for name, value in vars(saga).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(saga.__all__)


def test_import_saga_adds_no_loguru_sink() -> None:
    # loguru has no public way to list sinks; its handler table is the only witness.
    out = _python(
        "from loguru import logger\n"
        "before = len(logger._core.handlers)\n"
        "import saga\n"
        "print(before, len(logger._core.handlers))\n"
    )
    before, after = out.split()
    assert after == before


def test_import_saga_adds_no_stdlib_logging_handler() -> None:
    out = _python(
        "import logging, saga\n"
        "print(len(logging.getLogger().handlers), len(logging.getLogger('saga').handlers))\n"
    )
    assert out.split() == ["0", "0"]


def test_saga_logging_is_disabled_until_the_application_enables_it() -> None:
    """A record from a ``saga.*`` module is dropped; enabling ``saga`` lets it through."""
    out = _python(
        "import json\n"
        "from loguru import logger\n"
        "import saga\n"
        "seen = []\n"
        "logger.remove()\n"
        "logger.add(lambda m: seen.append(m.record['name']), level='DEBUG')\n"
        "def emit(module):\n"
        "    exec('logger.error(\"x\")', {'__name__': module, 'logger': logger})\n"
        "emit('saga._engine'); emit('app')\n"
        "logger.enable('saga'); emit('saga._engine')\n"
        "print(json.dumps(seen))\n"
    )
    assert json.loads(out) == ["app", "saga._engine"]


def test_import_saga_does_not_import_chromadb_or_the_adapters() -> None:
    out = _python(
        "import sys, saga, json\n"
        "print(json.dumps([m for m in ('chromadb', 'httpx', 'stores', 'steps') "
        "if m in sys.modules]))\n"
    )
    assert json.loads(out) == []


def test_the_core_does_not_name_chromadb() -> None:
    """Not even lazily: only the composition root reaches ``stores``."""
    offenders = [
        path.name
        for path in (REPO / "saga").glob("*.py")
        if "import chromadb" in path.read_text() or "from chromadb" in path.read_text()
    ]
    assert offenders == []
