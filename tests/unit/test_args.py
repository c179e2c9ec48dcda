"""How a parameter becomes arguments: split like a shell, never interpreted."""

from __future__ import annotations

import json

import pytest

from minionize.callbacks.base import describe_param, param_env
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


def test_a_key_named_file_never_passes_for_the_file_of_a_large_parameter() -> None:
    # MINION_PARAM_FILE, when set, is the path of a file holding the parameter's JSON.
    env = param_env(Message("1", {"file": "/etc/hostname", "File": "x", "lr": 1}), slot=0)
    assert "MINION_PARAM_FILE" not in env and env["MINION_PARAM_LR"] == "1"
    assert json.loads(env["MINION_PARAM"])["file"] == "/etc/hostname"


def nested(depth: int) -> list:
    """[[[...]]] `depth` deep (past the recursion limit of json and repr)."""
    top: list = []
    inner = top
    for _ in range(depth - 1):
        inner.append([])
        inner = inner[0]
    return top


def test_a_nul_or_a_lone_surrogate_in_any_item_is_rejected() -> None:
    for param in (["ok", "a\x00b"], ["\ud800"], "x \udcff"):
        with pytest.raises(BadParam, match="NUL|surrogate"):
            param_args(param)
    # Inside a dict the argument is JSON, which escapes both.
    assert json.loads(param_args({"k": "a\x00\ud800"})[0]) == {"k": "a\x00\ud800"}


def test_values_json_cannot_write_are_rejected_not_raised() -> None:
    deep = nested(100_000)
    with pytest.raises(BadParam, match="nested too deeply"):
        param_args([deep])
    with pytest.raises(BadParam, match="cannot be written as JSON"):
        param_args({"n": 10**5000})
    with pytest.raises(BadParam, match="nested too deeply"):
        param_env(Message("1", deep), slot=0)


def test_templates_reject_what_they_cannot_format() -> None:
    with pytest.raises(BadParam, match="cannot format"):
        param_args({"lr": 1}, "{lr[0]}")  # TypeError: an int has no items
    with pytest.raises(BadParam, match="cannot format"):
        param_args({"n": 10**5000}, "{n}")
    with pytest.raises(BadParam, match="NUL"):
        param_args({"name": "a\x00"}, "--name {name}")
    # {param} is written only when asked for: a deep value elsewhere does not matter.
    assert param_args({"lr": 1, "deep": nested(100_000)}, "--lr {lr}") == ["--lr", "1"]


def test_param_env_refuses_what_an_environment_cannot_hold() -> None:
    with pytest.raises(BadParam, match="NUL character"):
        param_env(Message("1", {"k": "a\x00b"}), slot=0)
    with pytest.raises(BadParam, match="lone surrogate"):
        param_env(Message("1", {"k": "\ud800"}), slot=0)
    # MINION_PARAM is JSON: a lone surrogate in a list is escaped there, losslessly.
    env = param_env(Message("id\x00", ["\ud800"]), slot=0)
    assert json.loads(env["MINION_PARAM"]) == ["\ud800"]
    assert "\x00" not in env["MINION_MESSAGE_ID"]


def test_describe_param_is_bounded_and_never_raises() -> None:
    deep = nested(100_000)
    assert describe_param(deep, 20) == "[" * 17 + "..."
    assert describe_param({"n": 10**5000}) == '{"n": <integer of about 5001 digits>}'
    assert describe_param({"a": [1, None, True]}) == '{"a": [1, null, true]}'  # as json.dumps writes it
    assert len(describe_param("w" * (1 << 20))) == 200
