class UserError(Exception):
    """A problem with what the user gave us. The CLI prints it as one line and exits non-zero (2)."""

    exit_code = 2


class RankFailed(UserError):
    """A rank of a torchrun launch failed (crash, signal): one line naming it, exit code 1."""

    exit_code = 1
