"""The one exception type that the CLI turns into a single line and exit status 2."""


class UserError(Exception):
    """Bad input or a state the user can fix; the message says what is wrong and how to fix it."""
