"""Errors that end a run with one clear line on stderr and a non-zero exit."""


class InputError(Exception):
    """Bad input, bad weights or an unwritable output: the message is the whole story."""

    exit_code = 2
