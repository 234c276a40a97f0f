"""The ``privmed`` command line (also ``python -m privmed``), one module per command group.

:mod:`~privmed.cli.train` (``train``, ``evaluate``, ``compare``), :mod:`~privmed.cli.check` (``check``),
:mod:`~privmed.cli.synth`
(``synth train/sample/evaluate``), :mod:`~privmed.cli.audit` (``audit``, ``audit-synthetic``),
:mod:`~privmed.cli.study` (``study``, ``report``, ``demo``), :mod:`~privmed.cli.data`
(``phantom``, ``models``); :mod:`~privmed.cli.options` holds what they share. Every argument of a
command is declared once, in its command's table (:class:`~privmed.cli.options.Option`), with the config
key it sets if any; option defaults and choices come from the config dataclasses. Every user error is a
:class:`PrivmedError`: printed as one line, exit status 2. The library logs and never prints;
:mod:`~privmed.cli.logs` shows its records on standard error.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Sequence

from privmed.threads import quiet_openmp

quiet_openmp()  # before anything imports torch

from privmed.errors import OUT_EMPTY, PrivmedError  # noqa: E402

from . import audit, check, data, study, synth, train  # noqa: E402
from .logs import show_library_logs  # noqa: E402
from .options import option_keys, overrides  # noqa: E402
from .train import RUN_OPTIONS  # noqa: E402

__all__ = ["OPTION_KEYS", "RUN_OPTIONS", "LineTracker", "build_parser", "cli_overrides", "main"]

#: ``privmed train``'s option (its attribute) -> the config key it sets, from the one table of options
OPTION_KEYS = option_keys(RUN_OPTIONS)


def cli_overrides(args: argparse.Namespace, options=RUN_OPTIONS) -> dict:
    """The nested config overrides of the options given (``options``: a table, by default ``privmed train``'s)."""
    return overrides(args, options)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 1
    show_library_logs()  # the library logs; the command line shows it
    warnings.filterwarnings("ignore", module="opacus")
    warnings.filterwarnings("ignore", message=".*[Ff]ull backward hook.*")
    stderr = sys.stderr
    sys.stderr = tracked = LineTracker(stderr)  # progress bars write here; a message then starts its own line
    try:
        if isinstance(getattr(args, "out", None), str) and not args.out.strip():  # '' would be the working folder
            raise PrivmedError(OUT_EMPTY)
        if getattr(args, "bootstrap", None) is not None and args.handler is not train.cmd_train:  # train: its config
            from privmed.evaluation.external import check_resamples

            check_resamples(args.bootstrap)
        return args.handler(args) or 0
    except PrivmedError as err:
        if _speaks_for_all_ranks():
            tracked.message(f"privmed: error: {err}")
        return 2
    except OSError as err:  # a full disk or a folder it may not write, met outside privmed.atomic's writers
        message = _os_error_message(err)
        if message is None:
            raise
        if _speaks_for_all_ranks():
            tracked.message(f"privmed: error: {message}")
        return 2
    except KeyboardInterrupt:
        tracked.message("privmed: interrupted; continue with the same command plus --resume.")
        return 130
    finally:
        sys.stderr = stderr


def _os_error_message(err: OSError) -> str | None:
    """One line for a full disk or a file or folder this user may not use (None: a bug, keep its traceback)."""
    from pathlib import Path

    from privmed.atomic import DENIED, FULL, mount_point
    from privmed.errors import ACCESS_DENIED, DISK_FULL

    path = Path(err.filename) if err.filename else Path.cwd()
    if err.errno in FULL:
        return DISK_FULL.format(mount=mount_point(path), path=path)
    if isinstance(err, PermissionError) or err.errno in DENIED:
        return ACCESS_DENIED.format(path=path, reason=err.strerror or "permission denied")
    return None


def _speaks_for_all_ranks() -> bool:
    """Whether this process prints a user error: under ``torchrun`` every rank runs the same command on the
    same inputs and would print the same line, so only rank 0 does (the others still exit with status 2)."""
    return os.environ.get("RANK", "0") == "0"


def build_parser() -> argparse.ArgumentParser:
    """The ``privmed`` parser: every command group adds its commands; every command's help shows its defaults."""
    parser = Parser(prog="privmed", description="Privacy-preserving medical-image AI.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command")  # subcommands are Parsers too, with the same help
    for group in (train, check, data, audit, synth, study):
        group.add_parsers(sub)
    return parser


class DefaultsFormatter(argparse.HelpFormatter):
    """Help that ends an option's text with its default, unless the text already says it (an option that sets
    a config key defaults to None so that a --config file, or the config itself, sets it; its text names the
    config's default)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text.lower() or action.default in (None, argparse.SUPPRESS) or not action.option_strings
                or action.nargs == 0):
            return text
        return f"{text} (default %(default)s)" if text else "default %(default)s"


class Parser(argparse.ArgumentParser):
    """An argument parser whose help shows defaults (:class:`DefaultsFormatter`); its subcommands' too."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)


def _version() -> str:
    """privmed's version, from the installed package's metadata (the source's own when not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("privmed")
    except PackageNotFoundError:
        from privmed import __version__

        return __version__


class LineTracker:
    """A text stream (standard error) that remembers whether its last write ended a line, so that a
    message never continues a progress bar's line."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self._at_line_start = True

    def write(self, text: str) -> int:
        if text:
            last = text[-1]
            self._at_line_start = last == "\n" or (last == "\r" and self.isatty())
        return self._stream.write(text)

    def message(self, line: str) -> None:
        """Write ``line`` on a line of its own."""
        self.write(("" if self._at_line_start else "\n") + line + "\n")
        self.flush()

    def isatty(self) -> bool:
        return bool(getattr(self._stream, "isatty", lambda: False)())

    def __getattr__(self, name: str):
        return getattr(self._stream, name)
