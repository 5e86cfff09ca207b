"""What the benchmarks share."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parents[1]


async def drop_namespace(client: aioredis.Redis, namespace: str) -> int:
    """UNLINK every key of ``namespace`` (SCAN ``{ns}*``)."""
    removed = 0
    batch: list[Any] = []
    async for key in client.scan_iter(match=f"{{{namespace}}}*", count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            removed += int(await client.unlink(*batch))
            batch.clear()
    if batch:
        removed += int(await client.unlink(*batch))
    return removed


async def spawn(
    module: str, mode: str, cfg: dict[str, Any], log_path: Path
) -> asyncio.subprocess.Process:
    """``python -m MODULE MODE CFG-JSON`` in a session of its own (a Ctrl-C
    reaches the benchmark, which stops its children in order); stdout is a
    pipe for markers, stderr goes to ``log_path``."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    with open(log_path, "ab") as log_file:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            mode,
            json.dumps(cfg),
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": path},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=log_file,
            start_new_session=True,
        )


async def read_marker(
    proc: asyncio.subprocess.Process, marker: bytes, timeout: float
) -> bytes | None:
    """What follows ``marker`` on the child's next line that has it, or None
    when the child ends or ``timeout`` passes first."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), deadline - time.monotonic())
        except TimeoutError:
            return None
        if not line:
            return None
        at = line.find(marker)  # faust may put terminal control codes first
        if at >= 0:
            return line[at + len(marker) :].strip()
    return None


async def stop_child(proc: asyncio.subprocess.Process, timeout: float = 15.0) -> int:
    """SIGTERM, then SIGKILL after ``timeout``; the exit code."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    return int(proc.returncode or 0)


def tail(path: Path, n: int = 3000) -> str:
    """The end of a log file ("" if it is not there)."""
    try:
        return path.read_bytes()[-n:].decode(errors="replace")
    except OSError:
        return ""


RESULTS_DIR = ROOT / "bench" / "results"


def write_result(name: str, result: dict[str, Any]) -> Path:
    """``bench/results/latest-NAME.json``: what ``python -m bench`` sums up."""
    path = RESULTS_DIR / f"latest-{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str))
    return path
