"""The project's messages on Kedro's Rich console (histocluster.log_handler, set up by a hook)."""

from __future__ import annotations

import os
import subprocess
import sys

from .conftest import make_project

CODE = """
from pathlib import Path
import logging
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
bootstrap_project(Path.cwd())
KedroSession.create(project_path=Path.cwd()).load_context()
logging.getLogger("histocluster.pipelines.annotation.nodes").info(
    'no cells.zarr: pip install -e ".[scverse]" to have one; slide %s', "scan[2].svs"
)
# Kedro's own line, coloured by its handler through Rich markup.
logging.getLogger("kedro.io.data_catalog").info(
    "Loading data from %s (%s)...", "tiles", "ParquetDataset", extra={"rich_format": ["dark_orange"]}
)
"""


def test_square_brackets_in_a_log_message_are_printed_as_written(tmp_path):
    """Kedro's Rich handler takes `[scverse]` for console markup and drops it: the install
    hint would read `pip install -e "."`. In a real session the console escapes the
    project's messages and leaves Kedro's markup working (no `[dark_orange]` printed)."""
    root = make_project(tmp_path / "project")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"COLUMNS": "300"}
    done = subprocess.run([sys.executable, "-c", CODE], cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert 'pip install -e ".[scverse]" to have one; slide scan[2].svs' in output, output
    assert "Loading data from tiles (ParquetDataset)..." in output, output
    assert "dark_orange" not in output, output
