"""`python -m bench.speed`: our job against the peer a competent dlt user would write (#13).

One emulator process (bench.sync `serve`: 2,000 pumps, 50 users, 20 ms latency), each sync in a
fresh process with a fresh DuckDB file: the job at its default concurrency and at 16, then
`bench.peer` (dlt's `rest_api` source) sequential and tuned to 16 extract workers; and a second
sync of the default run's pipeline with nothing changed on the portal. Printed per run: wall (of
the sync: `run_sync`), requests, CPU seconds and CPU per request; the ratios the issue sets targets
for, the physical limit requests x latency / 16, and what the unchanged sync spends beyond its
requests' latency (wall - requests x latency / the default concurrency).

    .venv/bin/python -m bench.speed [--pumps 2000] [--users 50] [--latency-ms 20]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.sync import DEFAULT_CONCURRENCY, ROOT, EmulatorProcess, child_environment


def run(command: list[str], out: Path) -> dict[str, Any]:
    completed = subprocess.run(command, cwd=ROOT, env=child_environment(), capture_output=True)
    if not out.exists():
        tail = completed.stderr.decode(errors="replace")[-1500:]
        raise RuntimeError(f"{' '.join(command[:4])} failed (exit {completed.returncode}): {tail}")
    figures: dict[str, Any] = json.loads(out.read_text())
    return figures


def ours(emu: EmulatorProcess, scratch: Path, name: str, concurrency: int) -> dict[str, Any]:
    emu.call("reset")
    out = scratch / f"{name}.json"
    command = [sys.executable, "-m", "bench.sync", "sync", f"--workdir={scratch / name}"]
    command += [f"--concurrency={concurrency}", f"--out={out}", f"--url={emu.url}"]
    command += [f"--key={emu.key}", f"--run-at={emu.now}"]
    figures = run(command, out)
    figures["server_requests"] = sum(emu.call("stats")["counts"].values())
    return figures


def peer(emu: EmulatorProcess, scratch: Path, name: str, workers: int | None) -> dict[str, Any]:
    emu.call("reset")
    out = scratch / f"{name}.json"
    command = [sys.executable, "-m", "bench.peer", f"--url={emu.url}", f"--key={emu.key}"]
    command += [f"--workdir={scratch / name}", f"--out={out}"]
    command += [f"--workers={workers}", "--parallel"] if workers else []
    figures = run(command, out)
    figures["server_requests"] = sum(emu.call("stats")["counts"].values())
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.speed", description=__doc__)
    parser.add_argument("--pumps", type=int, default=2_000)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="pump-portal-speed-"))
    results: dict[str, dict[str, Any]] = {}
    with EmulatorProcess(args.pumps, args.users, args.latency_ms) as emu:
        results["ours, default concurrency"] = ours(emu, scratch, "default", DEFAULT_CONCURRENCY)
        # The same pipeline again, the portal as it was: a scheduled run on a quiet fleet.
        results["ours, unchanged fleet"] = ours(emu, scratch, "default", DEFAULT_CONCURRENCY)
        results["ours, 16 in flight"] = ours(emu, scratch, "c16", 16)
        results["peer, sequential"] = peer(emu, scratch, "peer_seq", None)
        results["peer, 16 workers"] = peer(emu, scratch, "peer_16", 16)
    print(f"{'run':28} {'wall s':>7} {'requests':>9} {'CPU s':>6} {'CPU ms/req':>10}")
    for name, figures in results.items():
        requests = figures["server_requests"]
        print(
            f"{name:28} {figures['wall_s']:7.1f} {requests:9d} {figures['cpu_s']:6.1f} "
            f"{1000 * figures['cpu_s'] / requests:10.2f}"
        )
    c16 = results["ours, 16 in flight"]
    limit = c16["server_requests"] * args.latency_ms / 1000 / 16
    default = results["ours, default concurrency"]["wall_s"]
    print(
        f"default vs sequential peer: {results['peer, sequential']['wall_s'] / default:.1f}x "
        f"(target >= 10x); 16 in flight vs requests x latency / 16 = {limit:.1f} s: "
        f"{c16['wall_s'] / limit:.2f}x (target <= 1.3x); vs the tuned peer: "
        f"{results['peer, 16 workers']['wall_s'] / c16['wall_s']:.2f}x faster (target >= 1.5x)"
    )
    quiet = results["ours, unchanged fleet"]
    latency = quiet["server_requests"] * args.latency_ms / 1000 / DEFAULT_CONCURRENCY
    print(
        f"unchanged fleet: {quiet['wall_s']:.2f} s for {quiet['server_requests']} requests, "
        f"{quiet['wall_s'] - latency:.2f} s beyond their latency ({latency:.2f} s at "
        f"{DEFAULT_CONCURRENCY} in flight; target <= 1.5 s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
