"""Project settings; see https://docs.kedro.org/en/stable/configure/configuration_basics/"""

from histocluster.hooks import (
    CheckModelFilesHook,
    ConsoleLogHook,
    MissingInputsHook,
    OutputFoldersHook,
    ReleaseMemoryHook,
    ResultsViewHook,
    RunLineageHook,
    RunLockHook,
    ValidateParametersHook,
)

# Hooks are executed in a Last-In-First-Out (LIFO) order: the run lock is taken first.
HOOKS = (
    ValidateParametersHook(),
    MissingInputsHook(),
    OutputFoldersHook(),
    RunLineageHook(),  # after OutputFoldersHook: its error hook runs before that one raises
    CheckModelFilesHook(),
    RunLockHook(),
    ReleaseMemoryHook(),
    ResultsViewHook(),  # after RunLockHook: it runs while the run still holds the lock
    ConsoleLogHook(),  # last, so first: the console prints this project's messages as written
)

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # conf/gpu and conf/local override single keys (clustering.device), not whole sections.
    "merge_strategy": {"parameters": "soft"},
}
