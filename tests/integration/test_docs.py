"""The docs are executed: every shell, console, Python and Dockerfile block of the READMEs.

Each block runs as tests/docs/runner.py says (fresh directory and HOME, clean
environment, the project's venv first in PATH, the docker, helm and pip
shims), against the real Redis and the private Docker engine; a console
block's output is compared with what the doc shows. A block that cannot run
here carries `<!-- doc-test: skip: REASON -->` in its source; the run ends
with a line that counts what ran and what is marked.

The images come from the session's `built_images` (shared with
test_image.py), so the docs' own `docker build`s hit the layer cache. No doc
block needs the Pub/Sub emulator or a Pulsar broker (their charts are only
rendered). The README's Install blocks are the project's test of a wheel in
a fresh virtualenv and with pipx (test_packaging.py no longer repeats it).
About 75 s on an idle 2-core machine, most of it pip and venvs.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, require
from tests.docs.blocks import DATA, RUNNABLE, Block, iter_docs, parse_markdown
from tests.docs.runner import TALLY, Session, drop_streams, run
from tests.unit.conftest import k8s_tools

from .conftest import PYTHON_IMAGE, BuiltImages

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.timeout(1200)]

DOCS = (
    "README.md", "docker/README.md", "helm/minionize/README.md", "k8s/README.md", "examples/**/README.md",
    "docs/*.md",
)
REDIS_URL = "redis://127.0.0.1:6379/0"
#: Bundled by the kubernetes-validate that scripts/k8s-tools.sh pins (as in test_chart.py).
KUBERNETES_VERSION = "1.37.0"
BLOCKS = [block for path in iter_docs(ROOT, DOCS) for block in parse_markdown(path.read_text(), path.relative_to(ROOT))]
#: In the docs' order: a block may continue the previous one, or read the file a data block wrote.
STEPS = [block for block in BLOCKS if not block.skip and (block.lang in RUNNABLE or block.lang in DATA)]
TALLY["marked"] = sum(1 for block in BLOCKS if block.skip)


def version() -> str:
    found = re.search(r'^version = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(), re.M)
    assert found
    return found[1]


@pytest.fixture(scope="session")
def docs_session(built_images: BuiltImages, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    """The tools and servers every block may use, and the base image under the name the docs give it."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=5).ping()
    except redis.RedisError as exc:
        require(False, f"no Redis answers on {REDIS_URL} (scripts/services.sh): {exc}")
    helm, validate = k8s_tools()
    require(helm is not None and validate is not None, "helm or kubernetes-validate is missing (scripts/k8s-tools.sh)")
    docker = shutil.which("docker")
    require(docker is not None, "the docker command is missing (scripts/dockerd.sh installs it)")
    built_images.engine.client.images.get(built_images.base).tag("minionize/base", version())
    session = Session(
        root=ROOT,
        scratch=tmp_path_factory.mktemp("docs"),
        venv_bin=Path(sys.executable).parent,
        redis_url=REDIS_URL,
        shim_env={
            "DOCS_ROOT": str(ROOT),
            "DOCS_REAL_DOCKER": str(docker),
            "DOCS_DOCKER_HOST": built_images.engine.host,
            "DOCS_BASE_IMAGE": PYTHON_IMAGE,
            "DOCS_HELM": str(helm),
            "DOCS_KUBERNETES_VALIDATE": str(validate),
            "DOCS_KUBERNETES_VERSION": KUBERNETES_VERSION,
        },
    )
    yield session
    drop_streams(REDIS_URL, session.streams)


@pytest.mark.parametrize("block", STEPS, ids=[block.where for block in STEPS])
def test_the_block_runs_as_the_doc_says(block: Block, docs_session: Session) -> None:
    if block.lang in DATA:
        name = block.directives.get("file")
        assert name, f"{block.where}: a {block.lang} block is data: give it `file: NAME` or `skip: REASON`"
        docs_session.files.setdefault(block.path, {})[name] = block.text
        TALLY["data"] += 1
        return
    outcome = run(block, docs_session)
    TALLY["ran" if not outcome.failure else "failed"] += 1
    for shim in outcome.shims:
        TALLY[f"shim:{shim}"] += 1
    TALLY["substituted"] += outcome.substituted
    assert not outcome.failure, outcome.failure


def test_every_block_runs_or_says_why_not() -> None:
    for block in BLOCKS:
        if block.lang not in RUNNABLE | DATA:
            # A terminal session with no language would go unchecked: call it `console`.
            assert not block.text.startswith("$ "), f"{block.where}: a session in a block with no language"
        if "skip" in block.directives:
            assert len(block.skip) > 15, f"{block.where}: say why the block cannot run here"
    assert len(STEPS) > 20, [block.where for block in STEPS]


def test_the_helm_shim_fails_where_helm_install_would(docs_session: Session) -> None:
    # The base image alone runs nothing: the chart refuses it at install, so must the shim.
    (block,) = parse_markdown(
        "<!-- doc-test: checkout -->\n```bash\nhelm install x ./helm/minionize --set engine=execo\n```\n", Path("t.md")
    )
    outcome = run(block, docs_session)
    assert outcome.shims == ["helm"] and "exited 1" in outcome.failure, outcome
