"""Project settings; see https://docs.kedro.org/en/stable/configure/configuration_basics/"""

from histocluster.hooks import (
    CheckModelFilesHook,
    MissingInputsHook,
    OutputFoldersHook,
    ValidateParametersHook,
)

# Hooks are executed in a Last-In-First-Out (LIFO) order.
HOOKS = (ValidateParametersHook(), MissingInputsHook(), OutputFoldersHook(), CheckModelFilesHook())

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # conf/gpu and conf/local override single keys (clustering.device), not whole sections.
    "merge_strategy": {"parameters": "soft"},
}
