"""Data loaders in a fresh interpreter: a hub id while offline gives one line naming the fix."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def test_hub_id_offline_gives_one_line_error_naming_the_fix():
    """Run in a fresh interpreter so HF_HUB_OFFLINE=1 is read at import time (as the libraries do)."""
    code = textwrap.dedent(
        """
        from posttrain_probe.data import load_problems, DataSourceError
        try:
            load_problems("posttrain-probe-nonexistent/no-such-dataset:test")
        except DataSourceError as e:
            print("MSG:" + str(e))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("MSG:")]
    assert len(lines) == 1, proc.stdout + proc.stderr
    msg = lines[0]
    assert "not a local path" in msg and "could not be fetched from the hub" in msg
    assert "HF_HUB_OFFLINE=0" in msg and "local file" in msg
