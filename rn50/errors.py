class UserError(Exception):
    """A problem with what the user gave us. The CLI prints it as one line and exits non-zero (2)."""

    exit_code = 2


class RankFailed(UserError):
    """A rank of a torchrun launch failed (crash, signal): one line naming it, exit code 1."""

    exit_code = 1


def first_line(e: BaseException | str, limit: int | None = None, typed: bool = False) -> str:
    """The first non-empty line of an exception's message (its type name if it has none), cut to `limit` chars;
    `typed`: prefixed with the exception's type name ("OSError: ..."), as a list of unreadable files shows it."""
    text = str(e).strip()
    if typed and isinstance(e, BaseException):
        text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    line = text.splitlines()[0] if text else (type(e).__name__ if isinstance(e, BaseException) else "")
    return line[:limit] if limit else line


def need(ok: bool, message: str) -> None:
    """Raise UserError(message) unless `ok`: one check of the user's input a line."""
    if not ok:
        raise UserError(message)
