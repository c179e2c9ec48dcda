"""The `minion-push` command: fill any engine's queue with parameters.

    minion-push 1 2 3                         # one parameter per argument
    minion-push --file params.txt             # one per line (--json: JSON lines)
    minion-push --sweep lr=0.1,0.01 --sweep seed=1,2,3
                                              # the cartesian product, as dicts

The engine and its settings come from the environment (and `.env`), as for
`minionize` itself. Parameters are streamed, never held in a list: read (or
generated) once to check them all before anything is queued, then again
into the engine (standard input alone is kept, since it cannot be read
twice). Values are JSON when they parse as JSON (`1` is a
number, `x` a string) unless --raw. Every engine gets the same wire format
(`engines.base.encode`): a string as its text, anything else as JSON, which
the minions' decoders, identity (the default) or json, read back as pushed.
"""

from __future__ import annotations

import argparse
import io
import itertools
import sys
from collections.abc import Iterator
from typing import IO, Any, Callable, Optional

from . import __version__, config, exitcodes, jsontext
from .assembly import build_engine, exit_code_of
from .engines.base import Pushed, encode
from .errors import ConfigError, MinionizeError
from .excerpt import safe_text


def _utf8(text: str, where: str) -> str:
    """`text`, unless a byte of it is not UTF-8 (kept by Python as a surrogate): then a ConfigError
    naming it. No queue takes it (JSON, the file engine), and those that would hand it on garbled."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        shown = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        byte = ord(text[exc.start]) - 0xDC00
        raise ConfigError(where, safe_text(shown, 200),
                          f"not UTF-8 text (byte {byte:#04x} at character {exc.start + 1})") from None
    return text


def _value(text: str, raw: bool) -> Any:
    if raw:
        return text
    try:
        return jsontext.loads(text)
    except ValueError:  # not JSON, or nested too deeply for it: text
        return text


def sweep(axes: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The cartesian product of named value lists, like execo's `sweep`."""
    return list(iter_sweep(axes))


def iter_sweep(axes: dict[str, list[Any]]) -> Iterator[dict[str, Any]]:
    """The same product, one dict at a time."""
    names = list(axes)
    for values in itertools.product(*(axes[n] for n in names)):
        yield dict(zip(names, values, strict=True))


def _parse_sweep(specs: list[str], raw: bool) -> dict[str, list[Any]]:
    axes: dict[str, list[Any]] = {}
    for spec in specs:
        name, sep, values = _utf8(spec, "--sweep").partition("=")
        if not sep or not name or not values:
            raise ConfigError("--sweep", spec, "expected NAME=VALUE1,VALUE2,...")
        axes[name] = [_value(v, raw) for v in values.split(",")]
    return axes


def _open_text(path: str) -> IO[str]:
    """FILE, or stdin for -, as text whose bytes that are not UTF-8 are kept (as surrogates) to be named."""
    if path != "-":
        return open(path, encoding="utf-8", errors="surrogateescape")  # noqa: SIM115 - the caller's `with`
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:
        return sys.stdin  # a host program's own text stream
    return io.TextIOWrapper(buffer, encoding="utf-8", errors="surrogateescape")


def _read_file(path: str, as_json: bool) -> Iterator[Any]:
    try:
        handle = _open_text(path)
    except OSError as exc:
        raise ConfigError("--file", path, f"cannot read it ({exc.strerror})") from None
    with handle:
        for number, line in enumerate(handle, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            _utf8(line, f"--file {path}, line {number}")
            if as_json:
                try:
                    yield jsontext.loads(line)
                except ValueError as exc:
                    reason = getattr(exc, "msg", str(exc))
                    where = f"--file {path}, line {number}"
                    raise ConfigError(where, safe_text(line, 200), f"not JSON ({reason})") from None
            else:
                yield line


def parameters(args: argparse.Namespace) -> Callable[[], Iterator[Any]]:
    """The parameters the arguments give, as a source that can be read more than once."""
    given = [_value(_utf8(p, "parameter"), args.raw) for p in args.params]
    axes = []
    if args.sweep:
        axes.append(_parse_sweep(args.sweep, args.raw))
    if args.sweep_json:
        _utf8(args.sweep_json, "--sweep-json")
        try:
            parsed = jsontext.loads(args.sweep_json)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict) or not all(isinstance(v, list) for v in parsed.values()):
            raise ConfigError("--sweep-json", safe_text(args.sweep_json, 200), 'expected {"name": [values...], ...}')
        axes.append(parsed)
    piped = list(_read_file("-", args.json)) if args.file == "-" else None  # read once: kept

    def source() -> Iterator[Any]:
        yield from given
        if piped is not None:
            yield from piped
        elif args.file:
            yield from _read_file(args.file, args.json)
        for each in axes:
            yield from iter_sweep(each)

    return source


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minion-push",
        description="Queue parameters for minions, on the engine chosen by MINION_ENGINE.",
    )
    parser.add_argument("params", nargs="*", help="parameters, one per argument")
    parser.add_argument("--file", help="read parameters from FILE, one per line (- for stdin)")
    parser.add_argument("--json", action="store_true", help="the --file lines are JSON documents")
    parser.add_argument("--sweep", action="append", metavar="NAME=V1,V2", help="an axis of a sweep (repeatable)")
    parser.add_argument("--sweep-json", metavar="JSON", help='a whole sweep: {"name": [values...], ...}')
    parser.add_argument("--raw", action="store_true", help="values are strings, never parsed as JSON")
    parser.add_argument("--retry-failed", action="store_true",
                        help="queue the failed (dead-lettered) parameters again, out of the dead-letter place")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def _check(params: Iterator[Any]) -> int:
    """Refuse, before anything is queued, a parameter that has no wire format; how many there are."""
    count = 0
    for param in params:
        try:
            encode(param, "json")
        except (TypeError, ValueError) as exc:
            raise ConfigError("parameter", param, str(exc)) from None
        count += 1
    return count


class _Counted:
    """The parameters as the engine reads them, counted (an interrupted push says how far it got)."""

    def __init__(self, params: Iterator[Any]) -> None:
        self._params = params
        self.count = 0

    def __iter__(self) -> Iterator[Any]:
        for param in self._params:
            self.count += 1
            yield param


def _retry_failed(settings: config.Settings) -> int:
    engine = build_engine(settings)
    try:
        count = engine.retry_failed()
    finally:
        engine.close()
    print(f"queued {count} failed parameters again to {engine.describe()}")
    return exitcodes.OK


def main(argv: Optional[list[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = config.load()
        if settings.engine == "memory":
            raise ConfigError("MINION_ENGINE", "memory", "its queue lives and dies with one minion: minion-push "
                              "needs an engine that keeps what it queues (execo, file or a broker)")
        if args.retry_failed:
            return _retry_failed(settings)
        source = parameters(args)
        count = _check(source())
        if not count:
            raise ConfigError("parameters", None, "give parameters, --file, --sweep, --sweep-json or --retry-failed")
        engine = build_engine(settings)
        read = _Counted(source())
        try:
            where = engine.push(read)  # type: ignore[arg-type]  # any iterable: each engine reads it once
        except KeyboardInterrupt:
            print(f"minion-push: interrupted after reading {read.count} of the {count} parameters: "
                  f"some of them may be queued already", file=sys.stderr)
            return exitcodes.INTERRUPTED
        finally:
            engine.close()
    except KeyboardInterrupt:
        done = "" if args.retry_failed else ", before anything was queued"
        print(f"minion-push: interrupted{done}", file=sys.stderr)
        return exitcodes.INTERRUPTED
    except NotImplementedError as exc:
        print(f"minion-push: {exc}", file=sys.stderr)
        return exitcodes.CONFIG
    except MinionizeError as error:
        print(f"minion-push: {error}", file=sys.stderr)
        return exit_code_of(error)
    if isinstance(where, Pushed):
        old = count - where.new
        already = f"; the other {old} were in it already" if old else ""
        print(f"queued {where.new} new parameters to {where}{already}")
    else:
        print(f"queued {count} parameters to {where}")
    return exitcodes.OK


if __name__ == "__main__":
    sys.exit(main())
