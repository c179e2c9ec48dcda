"""A Python function turned into a minion with the `@minion` decorator.

    MINION_ENGINE=execo python examples/decorator.py
"""

from minionize import minion


@minion
def train(param):
    # Raise (or return False) to fail: the parameter is retried, then set aside.
    print(f"training with {param}", flush=True)


if __name__ == "__main__":
    train.run()
