"""The README's custom ProcessCallback, as a user writes it.

The queue holds dicts {"arg1": ..., "arg2": ...}; a.out wants
`a.out --arg1 VALUE1 VALUE2`. Run it with:

    python -c "from execo_engine.sweep import ParamSweeper, sweep; \\
        ParamSweeper('sweeps', sweeps=sweep({'arg1': [0, 1], 'arg2': ['x', 't']}), save_sweeps=True)"
    MINION_ENGINE=execo python examples/process.py
"""

from minionize import Param, ProcessCallback, minionizer


class MyProcessCallback(ProcessCallback):
    def to_cmd(self, param: Param):
        # A list runs as argv, with no shell: values are never interpreted.
        # (Returning a string instead runs it through `sh -c`, as in the
        # original minionize, because you asked for a shell.)
        return ["echo", "a.out", "--arg1", str(param["arg1"]), str(param["arg2"])]


if __name__ == "__main__":
    m = minionizer(MyProcessCallback())
    m.run()
