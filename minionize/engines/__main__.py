"""`python -m minionize.engines readme`: the README's block of engine variables, from the engines' declarations."""

from __future__ import annotations

import sys

from .kit import all_engine_classes, readme_block


def main(argv: list[str]) -> int:
    if argv != ["readme"]:
        print("usage: python -m minionize.engines readme", file=sys.stderr)
        return 2
    print(readme_block(all_engine_classes()), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
