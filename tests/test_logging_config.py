"""The project's logging setup (conf/logging.yml, which Kedro reads by default)."""

from __future__ import annotations

import os
import subprocess
import sys

from .conftest import make_project

CODE = """
from pathlib import Path
import logging
from kedro.framework.startup import bootstrap_project
bootstrap_project(Path.cwd())
logging.getLogger("histocluster.pipelines.annotation.nodes").info(
    'no cells.zarr: pip install -e ".[scverse]" to have one; slide %s', "scan[2].svs"
)
"""


def test_square_brackets_in_a_log_message_are_printed_as_written(tmp_path):
    """Kedro's Rich handler takes `[scverse]` for console markup and drops it unless the
    project turns markup off: the install hint would read `pip install -e "."`."""
    root = make_project(tmp_path / "project")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"COLUMNS": "300"}
    done = subprocess.run([sys.executable, "-c", CODE], cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert 'pip install -e ".[scverse]" to have one; slide scan[2].svs' in output, output
