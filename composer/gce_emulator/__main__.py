"""`gce-emulator` / `python -m gce_emulator`: run the emulator as a process until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

DEMO_SEED = Path(str(resources.files("gce_emulator") / "seeds" / "demo.yaml"))


def main(argv: Sequence[str] | None = None) -> int:
    from gce_emulator import Emulator

    parser = argparse.ArgumentParser(prog="gce-emulator", description="Local Compute Engine API emulator.")
    parser.add_argument(
        "--seed", type=Path, default=DEMO_SEED, help="YAML/JSON seed file (default: the demo fleet)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--port", type=int, default=8089, help="port (0 = any free port)")
    parser.add_argument("--time-scale", type=float, default=1.0, help="simulated seconds per real second")
    args = parser.parse_args(argv)
    if not args.seed.is_file():
        parser.error(f"--seed: no such file {args.seed}")
    if not (args.host == "localhost" or args.host.startswith("127.") or args.host == "::1"):
        parser.error("--host: the emulator only binds loopback addresses")
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    with Emulator(args.seed, time_scale=args.time_scale, host=args.host, port=args.port) as emu:
        print(f"gce-emulator listening on {emu.url} (seed {args.seed}, time x{args.time_scale})", flush=True)
        stopped.wait()
    print("gce-emulator stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
