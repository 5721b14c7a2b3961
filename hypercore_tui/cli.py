"""The ``hypercore`` command (and its ``create-vm`` / ``boot-vm`` aliases): the parser and
the dispatch; the commands themselves are in ``commands/``, one module per group.

Contract: DESIGN.md §3. Errors are one line on stderr, ``hypercore: error: ...``,
exit code 1 (the operation failed) or 2 (bad usage or input); never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from hypercore_tui import __version__
from hypercore_tui.commands import PROG, Handler
from hypercore_tui.commands.remote import run_on_host
from hypercore_tui.core.errors import HypercoreError
from hypercore_tui.core.hosts import LOCAL_HOST
from hypercore_tui.core.text import printable
from hypercore_tui.services.context import Context
from hypercore_tui.start import release_collector

#: The command groups (modules of ``hypercore_tui.commands``), in the order ``hypercore
#: --help`` lists their commands. Imported when the parser is built: the dashboard
#: (``hypercore`` alone or ``hypercore tui``) imports only its own, for a quick first frame.
GROUPS: tuple[str, ...] = (
    "dashboard",
    "lifecycle",
    "hosts",
    "migrate",
    "settings",
    "host",
    "storage",
    "ceph",
    "monitoring",
    "screen",
    "display",
    "console",
    "keys",
    "snapshots",
    "clipboard",
    "transfer",
    "share",
)
DASHBOARD_GROUPS = ("dashboard",)


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line, exit code 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser(groups: Sequence[str] = GROUPS) -> tuple[Parser, dict[str, Handler]]:
    """The parser of every command (of ``groups``), and each command's handler by name."""
    parser = Parser(prog=PROG, description="Run and watch QEMU/KVM virtual machines.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--host", metavar="NAME",
                        help="run the command on another host (see `hypercore hosts`), "
                             "over SSH; its output and exit code are passed through")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    handlers: dict[str, Handler] = {}
    for group in groups:
        module = importlib.import_module(f"hypercore_tui.commands.{group}")
        register: Callable[[Any], dict[str, Handler]] = module.register
        handlers.update(register(sub))
    return parser, handlers


class _LogFile(logging.FileHandler):
    """The log file, best effort: a record that cannot be written (a full disk) is
    dropped, never reported on the terminal with a traceback."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


def _setup_logging(ctx: Context) -> None:
    """Details go to $HYPERCORE_HOME/hypercore.log (best effort), never the terminal."""
    root = logging.getLogger("hypercore")
    root.setLevel(logging.DEBUG if os.environ.get("HYPERCORE_DEBUG") else logging.INFO)
    try:
        ctx.layout.home.mkdir(parents=True, exist_ok=True)
        handler = _LogFile(ctx.layout.log_file)
    except OSError:
        return
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root.addHandler(handler)


def _split_host(args: list[str]) -> tuple[str | None, list[str]]:
    """``--host NAME`` (or ``--host=NAME``) in front of a command, and the rest."""
    if args[:1] == ["--host"]:
        if len(args) < 2:
            raise UsageError("--host needs a host name (see `hypercore hosts list`)")
        return args[1], args[2:]
    if args and args[0].startswith("--host="):
        return args[0].removeprefix("--host="), args[1:]
    return None, args


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        if args_list == ["--version"]:  # asked on every new SSH connection: no parser
            sys.stdout.write(f"{PROG} {__version__}\n")
            return 0
        host, args_list = _split_host(args_list)
        if host is not None and host != LOCAL_HOST:
            release_collector()
            ctx = Context.from_environ()
            _setup_logging(ctx)
            return run_on_host(ctx, host, args_list)
        guest_argv: list[str] | None = None
        if args_list[:1] == ["exec"] and "--" in args_list:
            # Everything after `--` belongs to the guest command, options included.
            split = args_list.index("--")
            args_list, guest_argv = args_list[:split], args_list[split + 1:]
        dashboard = not args_list or args_list[0] == "tui"
        if not dashboard:  # (the dashboard gives the collector back after its first frame)
            release_collector()
        parser, handlers = build_parser(DASHBOARD_GROUPS if dashboard else GROUPS)
        args = parser.parse_args(args_list)
        if guest_argv is not None:
            args.argv = [*args.argv, *guest_argv]
        command = args.command or "tui"
        ctx = Context.from_environ()
        _setup_logging(ctx)
        return handlers[command](ctx, args)
    except UsageError as exc:
        sys.stderr.write(f"{PROG}: error: {printable(exc, limit=2000)}\n")
        return 2
    except HypercoreError as exc:
        # One line, whatever a guest or a library put into the message.
        sys.stderr.write(f"{PROG}: error: {printable(exc, limit=2000)}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # noqa: BLE001 - the last line of defence: no tracebacks
        logging.getLogger("hypercore").exception("internal error")
        sys.stderr.write(f"{PROG}: error: internal error: {type(exc).__name__}: "
                         f"{printable(exc)} (details in the log)\n")
        return 1


def entry() -> NoReturn:
    sys.exit(main())


if __name__ == "__main__":
    entry()
