class UserError(Exception):
    """A problem with what the user gave us. The CLI prints it as one line and exits non-zero."""
