"""The ``vidseg`` command line: parses arguments and hands them to one module per command.

Each command lives in ``vidseg/commands/<name>.py`` and defines ``HELP`` (one line), ``add_arguments(parser)``
and ``run(args) -> int``. Heavy imports (torch, av, cv2) happen inside ``run`` so that ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import pkgutil
import signal
import sys

import vidseg.commands
from vidseg.errors import Terminated, TerminationRequest, VidsegError, user_message
from vidseg.fileio import WRITE_ERRNOS

EXIT_TERMINATED = 143  # 128 + SIGTERM

# The order in which `vidseg --help` lists the commands; a command module not named here comes last.
COMMAND_ORDER = ["demo", "params", "synth", "prepare", "train", "evaluate", "segment", "export"]


def command_names() -> list[str]:
    found = [m.name for m in pkgutil.iter_modules(vidseg.commands.__path__) if not m.name.startswith("_")]
    return sorted(found, key=lambda name: (COMMAND_ORDER.index(name) if name in COMMAND_ORDER else 99, name))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidseg", description="Video semantic segmentation with recurrent UNets.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in command_names():
        module = importlib.import_module(f"vidseg.commands.{name}")
        command_parser = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command_parser)
        command_parser.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    previous = _terminate_on_sigterm()
    try:
        return int(args.run(args) or 0)
    except VidsegError as error:
        print(f"vidseg {args.command}: error: {user_message(error)}", file=sys.stderr)
        return 2
    except OSError as error:
        if error.errno not in WRITE_ERRNOS:
            raise
        # A write that no module explained (a log line, a third-party writer): still no traceback.
        where = f" ({error.filename})" if error.filename else ""
        print(
            f"vidseg {args.command}: error: {error.strerror}{where}; free some space or write somewhere else",
            file=sys.stderr,
        )
        return 2
    except Terminated:
        print(f"vidseg {args.command}: terminated by SIGTERM; its temporary files were removed", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print(f"vidseg {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _terminate_on_sigterm():
    """Make SIGTERM raise Terminated in the main thread (``vidseg train`` installs its own handler, which
    checkpoints, while it trains); return the previous handler, or None where signals cannot be set."""

    def terminate(signum, frame):
        TerminationRequest.requested = True
        raise Terminated()

    with contextlib.suppress(ValueError):  # not the main thread
        return signal.signal(signal.SIGTERM, terminate)
    return None


if __name__ == "__main__":
    raise SystemExit(main())
