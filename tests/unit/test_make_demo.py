"""``make demo`` passes the demo's flags (``DEMO_ARGS``) to ``hotspots demo``."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from streamer.cli_args import parser

ROOT = Path(__file__).resolve().parents[2]
ARGS = "--duration 60 --speed 100 --namespace demo-2"


def test_make_demo_passes_demo_args_to_the_command() -> None:
    make = shutil.which("make")
    if make is None:
        pytest.fail("make is not installed (the README's commands are make targets)")
    # run from the suite's own make (make test), an inherited MAKELEVEL would
    # add "make[1]: Entering directory" lines around the command
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    done = subprocess.run(
        [make, "-n", "--no-print-directory", "demo", f"DEMO_ARGS={ARGS}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    command = shlex.split(done.stdout.strip().splitlines()[-1])
    assert command[0].endswith("/hotspots") and command[1] == "demo", command
    args = parser().parse_args(command[1:])  # the demo's real flags
    assert (args.duration, args.speed, args.namespace) == (60.0, 100.0, "demo-2")
