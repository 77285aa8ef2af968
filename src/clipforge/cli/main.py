"""``clipforge`` command line. argparse lives here and in the ``cmd_*`` modules beside it, nowhere else.

Each ``cmd_<name>.py`` module is the command ``clipforge <name>``: its docstring is the command's
description (shown by ``--help``, so it is written for users), ``HELP`` its one-line summary,
``add_arguments(parser)`` adds its flags and ``run(args) -> int`` runs it. Modules are discovered,
so adding a command touches no shared list.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import pkgutil
import re
import select
import stat
import sys

from ..version import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipforge", description="Train, evaluate, convert and deploy CLIP image-text models."
    )
    parser.add_argument("--version", action="version", version=f"clipforge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    package = importlib.import_module(__package__)
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith("cmd_"):
            command = importlib.import_module(f"{__package__}.{info.name}")
            p = sub.add_parser(
                info.name.removeprefix("cmd_").replace("_", "-"),
                help=command.HELP,
                description=command.__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter,
            )
            command.add_arguments(p)
            p.set_defaults(func=command.run, command_parser=p)
    return parser


# How library errors name a Python parameter: `name=value` (or `name=` alone), in backticks.
_PARAMETER = re.compile(r"`(\w+)=([^`]*)`")


def as_flags(message: str, parser: argparse.ArgumentParser) -> str:
    """Say the Python parameters an error names (`resume=True`, `precision="fp32"`) as the
    command's flags (``--resume``, ``--precision fp32``); names that are not flags stay as written."""
    options = {a.dest: a for a in _options(parser)}

    def flag(match: re.Match[str]) -> str:
        action = options.get(match.group(1))
        if action is None:
            return match.group(0)
        value = match.group(2).strip("'\"")
        if action.nargs == 0:  # a switch: --x (store_true), or --x / --no-x (BooleanOptionalAction)
            negative = [o for o in action.option_strings if o.startswith("--no-")]
            positive = [o for o in action.option_strings if not o.startswith("--no-")]
            return negative[0] if negative and value in ("False", "false", "0") else max(positive, key=len)
        option = max(action.option_strings, key=len)
        return f"{option} {value}" if value else option

    return _PARAMETER.sub(flag, message)


def given_as(message: str, args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    """Add which flag (or argument) named the file an error begins with, ``PATH: cause``:
    ``x.pt: not a model ... (given as --model)``, so the one line says what to change."""
    for action in _arguments(parser):
        value = getattr(args, action.dest, None)
        if not isinstance(value, (str, os.PathLike)) or not str(value):
            continue
        if message.startswith((f"{value}:", f"{value} ")):
            name = max(action.option_strings, key=len) if action.option_strings else action.metavar or action.dest
            return message if name in message else f"{message} (given as {name})"
    return message


def _arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Every flag and positional argument of ``parser`` and of its sub-commands, outermost first.

    The one place that reads argparse's private ``_actions`` list: argparse has no public way to
    list a parser's arguments, and recording them as they are added would mean wrapping every
    ``add_argument`` of every command and group. Sub-commands are recognised by their public
    ``choices`` (names -> parsers), not by argparse's private ``_SubParsersAction`` class.
    ``test_cli_errors.py`` checks that every flag each command's ``--help`` shows is found here."""
    found = []
    for action in parser._actions:
        subs = action.choices if isinstance(action.choices, dict) else {}
        if subs and all(isinstance(sub, argparse.ArgumentParser) for sub in subs.values()):
            for sub in subs.values():
                found += _arguments(sub)
        elif action.dest not in ("help", argparse.SUPPRESS):
            found.append(action)
    return found


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The flags of ``parser`` and of its sub-commands (``eval zeroshot``'s, say), outermost first;
    a flag a sub-command repeats is its parent's."""
    found: dict[tuple[str, ...], argparse.Action] = {}
    for action in _arguments(parser):
        if action.option_strings:
            found.setdefault(tuple(action.option_strings), action)
    return list(found.values())


# The exit status of a program that the reader of its output has left (`clipforge models | head`):
# 128 + SIGPIPE, what `cat`, `grep` or `git log` end with there, so that a `set -o pipefail` script
# sees the same as with them, and nobody mistakes a cut-short output for a whole one.
EXIT_CLOSED_PIPE = 141


def main(argv: list[str] | None = None) -> int:
    """Run one command; a reader that stops reading (`| head`) ends it quietly."""
    try:
        try:
            return _main(argv)
        finally:  # also after --help: here, not at interpreter exit, where a closed pipe prints a traceback
            sys.stdout.flush()
    except BrokenPipeError:
        # Point stdout at /dev/null so that the interpreter's own final flush cannot fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        with contextlib.suppress(OSError, ValueError):  # a stdout without a file descriptor
            os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_CLOSED_PIPE


def _reader_gone() -> bool:
    """stdout is a pipe whose reading end is closed (Linux and macOS report POLLERR for it), so a
    broken pipe came from there, not from a socket or a worker's pipe, which is a real error."""
    try:
        fd = sys.stdout.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return False
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no descriptor; no poll() (Windows)
        return False


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, ImportError, ArithmeticError) as e:  # expected: one clear line, no traceback
        if args.verbose or isinstance(e, BrokenPipeError) and _reader_gone():
            raise  # (the reader of stdout went away: not the command's error; main ends quietly)
        message = given_as(as_flags(str(e), args.command_parser), args, args.command_parser)
        print(f"clipforge {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
