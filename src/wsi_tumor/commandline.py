"""What every console script shares: parser rules, logging set-up, errors and exit codes.

Parsers come from :func:`make_parser`: no prefix matching (``--mode`` is never taken for
``--model-repository``) and a single-valued option given twice is a usage error instead of
silently keeping the last value. :func:`run_command` parses the arguments, sets up logging
for the run (removed again when it returns, so tests can call ``main`` many times), runs the
command's body and turns errors into one line on stderr and the exit-code rule:

- 0: done; 1: the job failed on its input, model or server (a :class:`WsiTumorError`);
- 2: bad flags or configuration (argparse, :class:`ConfigError`, or an error type the command
  declares a usage error, e.g. ``wsi-infer``'s start-up errors); 130: interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from wsi_tumor.errors import EXIT_FAILURE, EXIT_USAGE, ConfigError, WsiTumorError

EXIT_OK = 0
EXIT_INTERRUPTED = 130
QUIET_LOGGERS = ("cucim", "PIL", "matplotlib", "grpc", "torch", "onnxscript", "onnx_ir", "ray")
"""Third-party loggers held at WARNING whatever the command's level."""
_SEEN = "_wsi_options_seen"


class _StoreOnce(argparse._StoreAction):
    """``store`` that refuses a second occurrence of the same option."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        seen: set[str] = namespace.__dict__.setdefault(_SEEN, set())
        if option_string is not None and self.dest in seen:
            parser.error(f"{'/'.join(self.option_strings)} given more than once")
        seen.add(self.dest)
        super().__call__(parser, namespace, values, option_string)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser with the project's rules (see the module docstring)."""

    def __init__(self, prog: str, description: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(prog=prog, description=description, **kwargs)
        self.register("action", "store", _StoreOnce)
        self.register("action", None, _StoreOnce)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """Parse as argparse does, then drop the bookkeeping of :class:`_StoreOnce`."""
        parsed, extras = super().parse_known_args(args, namespace)
        parsed.__dict__.pop(_SEEN, None)
        return parsed, extras


def make_parser(prog: str, description: str | None = None, **kwargs: Any) -> Parser:
    """A parser for console script ``prog`` (no abbreviations, repeated options refused)."""
    return Parser(prog, description, **kwargs)


def add_logging_flags(parser: argparse.ArgumentParser, verbose: bool = True) -> None:
    """``--quiet`` (no progress bars, warnings only) and, optionally, ``--verbose``."""
    parser.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")
    if verbose:
        parser.add_argument("--verbose", action="store_true", help="debug logging")


def report_error(prog: str, exc: BaseException, usage: bool = False) -> int:
    """Print ``prog: error: <exc>`` on stderr and return the exit code.

    ConfigError (or ``usage``) is a usage error (2); any other error is a failure (1).
    """
    sys.stderr.write(f"{prog}: error: {exc}\n")
    return EXIT_USAGE if usage or isinstance(exc, ConfigError) else EXIT_FAILURE


def log_level(args: argparse.Namespace) -> int:
    """DEBUG with ``--verbose``, WARNING with ``--quiet``, else INFO."""
    if getattr(args, "verbose", False):
        return logging.DEBUG
    return logging.WARNING if getattr(args, "quiet", False) else logging.INFO


def run_command(
    prog: str,
    parser: argparse.ArgumentParser,
    body: Callable[[argparse.Namespace], int],
    argv: Sequence[str] | None = None,
    *,
    usage_errors: tuple[type[BaseException], ...] = (),
    log_format: str = "%(asctime)s %(levelname)s %(name)s: %(message)s",
    level: Callable[[argparse.Namespace], int] = log_level,
    interrupted: str = "interrupted",
) -> int:
    """Parse ``argv``, set up logging, run ``body(args)`` and apply the exit-code rule.

    Args:
        prog: The command's name, used in error lines.
        parser: From :func:`make_parser`; a bad flag exits with 2 (argparse's own rule).
        body: The command; returns its exit code.
        argv: Arguments (default ``sys.argv[1:]``).
        usage_errors: Error types this command reports as usage errors (exit 2).
        log_format: Format of the log lines on stderr.
        level: The log level for the parsed arguments.
        interrupted: What to say on Ctrl-C (exit 130).
    """
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(log_format, "%H:%M:%S"))
    chosen = level(args)
    handler.setLevel(chosen)
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(min(previous, chosen) if previous else chosen)
    quieted = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(chosen, logging.WARNING))
    try:
        return body(args)
    except usage_errors as exc:
        return report_error(prog, exc, usage=True)
    except WsiTumorError as exc:
        return report_error(prog, exc)
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: {interrupted}\n")
        return EXIT_INTERRUPTED
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        for name, old in quieted.items():
            logging.getLogger(name).setLevel(old)


# --- flags from a config dataclass ----------------------------------------------------------
def option(default: Any, help: str, **meta: Any) -> Any:
    """A dataclass field that is also a command-line flag (see :func:`add_dataclass_flags`).

    Args:
        default: The field's default, the flag's default too.
        help: The flag's help text.
        meta: ``choices``, ``metavar``, ``flag`` (another flag name), ``action="append"``.
    """
    return dataclasses.field(default=default, metadata={"help": help, **meta})


def flag_name(field_name: str) -> str:
    """``region_cells`` -> ``--region-cells``."""
    return "--" + field_name.replace("_", "-")


def field_types(cls: type) -> dict[str, Any]:
    """Resolved type of every field of dataclass ``cls`` (``Optional`` unwrapped)."""
    hints = get_type_hints(cls)
    out = {}
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        if get_origin(hint) in (Union, types.UnionType):
            args = [a for a in get_args(hint) if a is not type(None)]
            hint = args[0] if len(args) == 1 else hint
        out[field.name] = hint
    return out


def add_dataclass_flags(
    parser: argparse.ArgumentParser, cls: type, *, defaults: bool = True
) -> None:
    """Declare one flag per field of ``cls`` whose metadata has a ``help`` text.

    The flag's type, default and choices come from the field (``metadata["choices"]``,
    ``metadata["flag"]`` for another name, ``metadata["action"]`` for ``append``), so each
    default is written once, in the dataclass. A ``bool`` field becomes ``--flag`` /
    ``--no-flag``. With ``defaults=False`` every default is None (for layered configs that
    fill the gaps from a file).
    """
    kinds = field_types(cls)
    for field in dataclasses.fields(cls):
        meta = field.metadata
        if "help" not in meta:
            continue
        kind = kinds[field.name]
        default = field.default if field.default is not dataclasses.MISSING else None
        if field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        shown = "" if default in (None, (), []) else " (default: %(default)s)"
        options: dict[str, Any] = {"help": meta["help"] + shown, "dest": field.name}
        options["default"] = default if defaults else None
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif meta.get("action") == "append":
            options["action"] = "append"
            options["type"] = get_args(kind)[0] if get_args(kind) else str
            options["default"] = None
        else:
            literal = get_origin(kind) is Literal
            options["type"] = meta.get("type", Path if kind is Path else str if literal else kind)
            if "choices" in meta:
                options["choices"] = meta["choices"]
            if "metavar" in meta:
                options["metavar"] = meta["metavar"]
        parser.add_argument(meta.get("flag", flag_name(field.name)), **options)
