"""Running the ``hotspots`` command line in tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def hotspots(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``hotspots ARGS`` as a fresh process from the repo root."""
    return subprocess.run(
        [sys.executable, "-m", "streamer.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
