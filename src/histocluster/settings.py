"""Project settings; see https://docs.kedro.org/en/stable/configure/configuration_basics/"""

from histocluster.hooks import ValidateParametersHook

# Hooks are executed in a Last-In-First-Out (LIFO) order.
HOOKS = (ValidateParametersHook(),)

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
}
