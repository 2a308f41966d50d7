"""What every verb shares: the consoles, the error-to-one-line group, the app factory, argv and flag helpers."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from enum import Enum
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from rn50.errors import UserError
from rn50.version import __version__

DEVICE_HELP = "auto (CUDA when present, else CPU), cpu or cuda"

console = Console()
err_console = Console(stderr=True)


class Rn50Group(TyperGroup):
    """Turns a UserError raised anywhere below into one line on stderr and exit code 2."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except typer.BadParameter as e:  # a range or choice the command line checks itself: one line too
            err_console.print(f"[bold red]rn50: error:[/] {escape(usage_line(e))}", highlight=False, soft_wrap=True)
            ctx.exit(2)
        except UserError as e:
            from rn50.launch import record_rank_error

            if not record_rank_error(e):  # a rank under `rn50 ... --gpus N`: its parent prints the line
                err_console.print(f"[bold red]rn50: error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            ctx.exit(e.exit_code)
        except OSError as e:
            # The world's faults (full disk, read-only or forbidden folder, a file where a folder should be) that
            # reached here unexplained: still one line. Anything else is a bug and keeps its traceback.
            import errno

            from rn50.io import WRITE_ERRNOS

            if e.errno not in WRITE_ERRNOS:
                raise
            where = f"{e.filename}: " if e.filename else ""
            # Only a full disk or a read-only file system is surely a write; EACCES/ENOTDIR may come from a read.
            writing = e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)
            hint = WRITE_ERRNOS[e.errno] if writing else "check the path and its permissions"
            message = f"{where}{e.strerror or e} ({hint})"
            err_console.print(f"[bold red]rn50: error:[/] {escape(message)}", highlight=False, soft_wrap=True)
            ctx.exit(2)


_BOUNDS = [
    (r"greater than or equal to", ">="),
    (r"greater than", ">"),
    (r"less than or equal to", "<="),
    (r"less than", "<"),
]


def usage_line(e: typer.BadParameter) -> str:
    """'--keep-epochs must be >= 0' for Typer's 'Invalid value for --keep-epochs: Input should be greater than or
    equal to 0'; the option's name and Typer's reason otherwise."""
    param = getattr(e, "param", None)
    name = (getattr(param, "opts", None) or [getattr(param, "name", "")])[0] or "a value"
    message = e.format_message() if not getattr(e, "message", None) else e.message
    for words, sign in _BOUNDS:
        m = re.fullmatch(rf"Input should be {words} (\S+?)\.?", message)
        if m:
            return f"{name} must be {sign} {m.group(1)}"
    return f"{name}: {message.removeprefix('Value error, ')}"


def make_app(help: str) -> typer.Typer:
    return typer.Typer(
        cls=Rn50Group,
        help=help,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_show_locals=False,
        rich_markup_mode="rich",  # option groups (rich_help_panel) in --help
    )


def version_callback(value: bool) -> None:
    if value:
        console.print(f"rn50 {__version__}")
        raise typer.Exit()


def _argv_value(value: object) -> str:
    return str(value.value if isinstance(value, Enum) else value)


def command_argv(ctx: typer.Context, skip: tuple[str, ...] = ()) -> list[str]:
    """The arguments and options given on this command line (not defaults), as argv: what a relaunch repeats."""
    args: list[str] = []
    opts: list[str] = []
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name)
        if param.name in skip or source is None or source.name in ("DEFAULT", "DEFAULT_MAP"):
            continue
        value = ctx.params[param.name]
        if param.param_type_name == "argument":
            args.append(_argv_value(value))
        elif getattr(param, "is_flag", False):
            if param.secondary_opts:
                opts.append(param.opts[0] if value else param.secondary_opts[0])
            elif value:
                opts.append(param.opts[0])
        elif value is not None:
            opts += [
                param.opts[0],
                *(map(_argv_value, value) if isinstance(value, tuple | list) else [_argv_value(value)]),
            ]
    return [*args, *opts]


def print_flags_and_files(flags: list[str], files: Mapping[str, Any]) -> None:
    """Each flag on its own line, on stdout beside the table it qualifies; then each result file, `kind: path`."""
    for flag in flags:
        console.print(f"[bold yellow]flag:[/] {escape(flag)}", highlight=False, soft_wrap=True)
    for kind, path in files.items():
        console.print(f"{kind}: {path}", highlight=False, soft_wrap=True)


def bind(cls: type, params: Mapping[str, Any], **values: Any) -> Any:
    """The dataclass `cls` from the command line's options named like its fields; `values` (derived ones) win."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{**{k: v for k, v in params.items() if k in names}, **values})


def switch(name: str, help: str, off: str | None = None, **kw: Any) -> Any:
    """A typed on/off option, --NAME/--no-NAME (or --NAME/--OFF)."""
    return typer.Option(f"--{name}/--{off or 'no-' + name}", help=help, **kw)
