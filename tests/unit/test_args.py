"""How a parameter becomes arguments: split like a shell, never interpreted."""

from __future__ import annotations

import json

import pytest

from minionize.callbacks.base import param_env
from minionize.callbacks.params import BadParam, param_args
from minionize.message import Message


def test_shell_metacharacters_stay_literal() -> None:
    assert param_args("$(touch /tmp/pwned); echo x") == ["$(touch", "/tmp/pwned);", "echo", "x"]
    assert param_args("`id` * | cat > f") == ["`id`", "*", "|", "cat", ">", "f"]


def test_quotes_are_respected() -> None:
    assert param_args("a 'b c' \"d e\"") == ["a", "b c", "d e"]


def test_unbalanced_quotes_are_rejected() -> None:
    with pytest.raises(BadParam, match="cannot split"):
        param_args("it's")


def test_lists_numbers_and_dicts() -> None:
    assert param_args(["a b", 1, 2.5, True]) == ["a b", "1", "2.5", "true"]
    assert param_args(7) == ["7"]
    assert json.loads(param_args({"a": 1})[0]) == {"a": 1}
    assert param_args(None) == []


def test_template_keeps_each_value_one_argument() -> None:
    args = param_args({"lr": 0.1, "name": "two words"}, "--lr {lr} --name {name}")
    assert args == ["--lr", "0.1", "--name", "two words"]


def test_template_with_a_missing_key_is_rejected() -> None:
    with pytest.raises(BadParam, match="seed"):
        param_args({"lr": 0.1}, "--lr {lr} --seed {seed}")


def test_template_whole_param() -> None:
    assert param_args("x y", "--input {param}") == ["--input", "x y"]


def test_nul_and_invalid_utf8_are_rejected() -> None:
    with pytest.raises(BadParam, match="NUL"):
        param_args("a\x00b")
    with pytest.raises(BadParam, match="UTF-8"):
        param_args(b"\xff\xfe")


def test_param_env_describes_the_run() -> None:
    env = param_env(Message("id-1", {"lr": 0.5, "my-key": "v"}, attempt=2), slot=1)
    assert json.loads(env["MINION_PARAM"]) == {"lr": 0.5, "my-key": "v"}
    assert env["MINION_PARAM_LR"] == "0.5"
    assert env["MINION_PARAM_MY_KEY"] == "v"
    assert (env["MINION_ATTEMPT"], env["MINION_MESSAGE_ID"], env["MINION_SLOT"]) == ("2", "id-1", "1")
