"""Checks on the repository itself: generated code is current, the public API is what it says."""

from __future__ import annotations

import filecmp
import subprocess
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_python_matches_the_protos(tmp_path: Path) -> None:
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen.sh"), str(tmp_path)],
        check=True,
        capture_output=True,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
    )
    committed = ROOT / "gen" / "python" / "exportd" / "v1"
    fresh = tmp_path / "exportd" / "v1"
    names = sorted(p.name for p in committed.iterdir() if p.is_file())
    assert names == sorted(p.name for p in fresh.iterdir() if p.is_file())
    _, mismatch, errors = filecmp.cmpfiles(committed, fresh, names, shallow=False)
    assert not mismatch and not errors, f"run `make gen`: {mismatch or errors} differ"


def test_sdk_public_names() -> None:
    import exportd.client as sdk

    public = {
        name
        for name, value in vars(sdk).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(sdk.__all__)
    assert "ExportClient" in sdk.__all__ and "ResourceExhaustedError" in sdk.__all__


def test_sdk_never_imports_the_server() -> None:
    code = (
        "import sys, exportd.client, exportd.client.cli; "
        "bad = [m for m in sys.modules if m.startswith('exportd.server')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_only_the_exportd_namespace_is_installed() -> None:
    code = (
        "import importlib.util as u; "
        "assert u.find_spec('server') is None and u.find_spec('client') is None"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")
