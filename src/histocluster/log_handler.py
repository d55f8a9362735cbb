"""The project's messages on Kedro's console, printed as written.

Kedro's console handler (``kedro.logging.RichHandler``) renders Rich console markup, which its
own lines need (dataset names in colour). A message of this project may hold square brackets
that are text, not styles — an install hint (``pip install -e ".[scverse]"``), a file name, a
server's answer — and Rich drops them. :func:`print_as_written` makes such a handler escape the
records of ``histocluster`` loggers (on a copy: other handlers see the message unchanged) and
leave Kedro's as they are. (A handler class of the project's own cannot go in a logging.yml:
Kedro loads handler classes only from ``logging`` and ``kedro.logging``.)
"""

from __future__ import annotations

import copy
import logging


def literal(record: logging.LogRecord) -> logging.LogRecord:
    """A copy of ``record`` whose message, formatted, is escaped for Rich markup."""
    from rich.markup import escape

    record = copy.copy(record)
    record.msg, record.args = escape(record.getMessage()), None
    return record


def print_as_written(handler: logging.Handler) -> None:
    """Make ``handler`` print the ``histocluster`` loggers' messages literally (once)."""
    if getattr(handler, "_histocluster_literal", False):
        return
    emit = handler.emit

    def emit_literally(record: logging.LogRecord) -> None:
        if record.name == "histocluster" or record.name.startswith("histocluster."):
            record = literal(record)
        emit(record)

    handler.emit = emit_literally
    handler._histocluster_literal = True


def print_project_messages_as_written() -> None:
    """:func:`print_as_written` on every Rich console handler of the root logger."""
    from rich.logging import RichHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, RichHandler):
            print_as_written(handler)
