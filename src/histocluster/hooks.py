"""Project hooks: parameter validation before any node runs."""

from __future__ import annotations

from kedro.framework.hooks import hook_impl

from histocluster.params import validate_parameters


class ValidateParametersHook:
    """Checks every pipeline's parameters against its model when the context is created,
    so a typo or a wrong type stops the run before any work with one message naming
    every bad key (``Error: ...``, exit status 1, no traceback).

    Kedro itself then turns each ``params:<pipeline>`` into its model for the nodes,
    from their type hints; this hook only makes the failure readable and complete."""

    @hook_impl
    def after_context_created(self, context) -> None:
        # The raw configuration (runtime --params included), before Kedro's own
        # validation, which would fail first with a traceback.
        validate_parameters(context.config_loader["parameters"])
