"""Every shell script of the repository passes shellcheck."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import ROOT, require

SCRIPTS = sorted(
    str(path.relative_to(ROOT))
    for path in [
        *ROOT.glob("scripts/*"), *ROOT.glob("docker/*.sh"), *ROOT.glob("examples/*/*.sh"), ROOT / ".ci" / "run"
    ]
    if path.is_file() and path.read_text(errors="replace").startswith("#!") and "sh" in path.read_text()[:40]
)


def test_the_scripts_were_found() -> None:
    assert {"scripts/test", "scripts/quickstart", "scripts/services.sh", ".ci/run"} <= set(SCRIPTS)
    assert {"examples/oar/oar.sh", "examples/slurm/slurm.sh"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_shellcheck(script: str) -> None:
    require(shutil.which("shellcheck") is not None, "shellcheck is not installed (apt-get install shellcheck)")
    result = subprocess.run(["shellcheck", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout
