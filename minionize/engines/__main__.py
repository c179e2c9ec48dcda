"""`python -m minionize.engines readme [--write README.md]`: the README's block of engine variables.

The block is made from the engines' declarations (their `settings`); with
`--write`, the fenced block that follows `<!-- engine-settings -->` in the
given file is replaced by it, so that a new engine's variables reach the
README without a hand edit (tests/unit/test_engine_settings.py checks it).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from .kit import all_engine_classes, readme_block

MARKER = "<!-- engine-settings -->"
USAGE = "usage: python -m minionize.engines readme [--write README.md]"


def replace_block(text: str, block: str) -> str:
    """`text` with the body of the fenced block after MARKER replaced by `block`."""
    start = text.index(MARKER)
    fence = text.index("```", start)
    body = text.index("\n", fence) + 1
    end = text.index("```", body)
    return text[:body] + block + text[end:]


def write(path: Path, block: str) -> bool:
    """Put `block` in `path` (atomically); False when it was there already."""
    text = path.read_text()
    updated = replace_block(text, block)
    if updated == text:
        return False
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as out:
        out.write(updated)
    os.chmod(out.name, path.stat().st_mode & 0o7777)
    os.replace(out.name, path)
    return True


def main(argv: list[str]) -> int:
    if argv[:1] != ["readme"] or len(argv) not in (1, 3) or (len(argv) == 3 and argv[1] != "--write"):
        print(USAGE, file=sys.stderr)
        return 2
    block = readme_block(all_engine_classes())
    if len(argv) == 1:
        print(block, end="")
        return 0
    path = Path(argv[2])
    try:
        changed = write(path, block)
    except (OSError, ValueError) as exc:
        reason = "no `" + MARKER + "` followed by a fenced block" if isinstance(exc, ValueError) else exc.strerror
        print(f"python -m minionize.engines: {path}: {reason}", file=sys.stderr)
        return 1
    print(f"{path}: {'engine variables written' if changed else 'engine variables already up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
