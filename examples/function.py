"""The README's FuncCallback: minionize a Python function.

    MINION_ENGINE=execo python examples/function.py
"""

from minionize import FuncCallback, Param, minionizer


def myfunc(arg1, arg2):
    # this is your function
    print(f"myfunc({arg1!r}, {arg2!r})", flush=True)


def _myfunc(param: Param):
    # the wrapper which invokes myfunc based on the params
    return myfunc(param["arg1"], param["arg2"])


if __name__ == "__main__":
    m = minionizer(FuncCallback(_myfunc))
    m.run()
