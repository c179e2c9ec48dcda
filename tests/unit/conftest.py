"""Fixtures of the chart and manifest tests: helm and kubernetes-validate.

Found through $HELM or PATH, else installed by scripts/k8s-tools.sh (which
scripts/test also calls); missing tools skip locally and fail under CI=true.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Optional

import pytest

from tests.conftest import ROOT, require

TOOLS_SCRIPT = ROOT / "scripts" / "k8s-tools.sh"


def _run_tools_script() -> Optional[str]:
    """Run scripts/k8s-tools.sh (idempotent) and return the helm path it prints."""
    if not TOOLS_SCRIPT.exists():
        return None
    env = dict(os.environ)
    if sys.prefix != sys.base_prefix:  # install kubernetes-validate next to this pytest
        env.setdefault("MINIONIZE_VENV", sys.prefix)
    done = subprocess.run([str(TOOLS_SCRIPT)], capture_output=True, text=True, env=env, timeout=600)
    if done.returncode != 0:
        return None
    return done.stdout.strip().splitlines()[-1]


@cache
def k8s_tools() -> tuple[Optional[str], Optional[str]]:
    """(helm, kubernetes-validate), from $HELM or PATH, else installed by the script."""
    helm = os.environ.get("HELM") or shutil.which("helm")
    validator = Path(sys.executable).parent / "kubernetes-validate"
    validate = str(validator) if validator.exists() else shutil.which("kubernetes-validate")
    if helm is None or validate is None:
        helm = helm or _run_tools_script()
        validate = validate or (str(validator) if validator.exists() else shutil.which("kubernetes-validate"))
    return helm, validate


@pytest.fixture(scope="session")
def helm() -> str:
    path = k8s_tools()[0]
    require(path is not None and Path(path).exists(), "helm is missing and scripts/k8s-tools.sh could not install it")
    assert path is not None
    return path


@pytest.fixture(scope="session")
def kubernetes_validate() -> str:
    path = k8s_tools()[1]
    require(path is not None, "kubernetes-validate is missing and scripts/k8s-tools.sh could not install it")
    assert path is not None
    return path
