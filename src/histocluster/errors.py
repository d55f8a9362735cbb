"""Errors in the user's input or configuration.

They derive from :class:`click.ClickException`, so ``kedro run`` prints their message as
one ``Error: ...`` line and exits with status 1 instead of printing a traceback; in
Python they are ordinary exceptions.
"""

from __future__ import annotations

import click


class UserInputError(click.ClickException):
    """Something the user can fix: a parameter, a missing file, an empty folder."""
