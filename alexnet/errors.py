"""The one exception type that the command line turns into a one-line message and exit 2."""


class UserError(ValueError):
    """Something the user can fix: a bad path, flag, value, file or checkpoint.

    The message is one line that says what is wrong and what to do about it.
    """
