"""The one error type the CLI turns into a single line and exit code 2."""


class InputError(ValueError):
    """Bad user input (a value out of range, a missing file, an unknown name)."""
