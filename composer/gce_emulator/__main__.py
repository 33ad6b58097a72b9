"""`gce-emulator` / `python -m gce_emulator`: run the emulator as a process until SIGINT or SIGTERM.

Every argument is checked by its argparse ``type`` (also used by `vm-backup demo` and `local-env`), so a
bad one ends in one line naming it and exit 2, before any port is bound.
"""

from __future__ import annotations

import argparse
import math
import signal
import stat
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

DEMO_SEED = Path(str(resources.files("gce_emulator") / "seeds" / "demo.yaml"))
MAX_TIME_SCALE = 100_000.0  # beyond this the simulated clock passes year 9999 within days of real time
MAX_SEED_BYTES = 16 << 20


def time_scale(text: str) -> float:
    """argparse type: simulated seconds per real second, a finite number in (0, MAX_TIME_SCALE] (0 would
    freeze the clock; inf and nan break its arithmetic, and every operation with it)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    if value > MAX_TIME_SCALE:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_TIME_SCALE:g}, got {text}")
    return value


def port_number(text: str) -> int:
    """argparse type: a TCP port, 0-65535 (0: any free port)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0-65535 (0: any free port), got {value}")
    return value


@dataclass(frozen=True)
class Seed:
    path: Path
    data: dict[str, Any]


def seed_file(text: str) -> Seed:
    """argparse type: a readable YAML/JSON seed file whose content the emulator loads (see the package
    docstring for the format); it is loaded once into a scratch world here, so any mistake is reported
    as the argument's."""
    import yaml

    from gce_emulator import compute, restore_guest
    from gce_emulator.model import DEFAULT_TIMINGS, SimClock, World

    path = Path(text)
    try:
        info = path.stat()  # before opening: a FIFO would block the open
        if not stat.S_ISREG(info.st_mode):
            raise argparse.ArgumentTypeError(f"{text} is not a regular file")
        if info.st_size > MAX_SEED_BYTES:
            raise argparse.ArgumentTypeError(f"{text} is larger than {MAX_SEED_BYTES >> 20} MiB")
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {text}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise argparse.ArgumentTypeError(f"{text} is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        first = " ".join(str(getattr(exc, "problem", None) or exc).split())
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise argparse.ArgumentTypeError(f"{text}: invalid YAML{where}: {first}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise argparse.ArgumentTypeError(
            f"{text}: a seed is a mapping with 'projects', got {type(data).__name__} {str(data)[:40]!r}"
        )
    try:
        compute.load_seed(world := World(SimClock(), dict(DEFAULT_TIMINGS)), data)
        restore_guest.load_seed(world, data)  # the boot profiles (restore_guest.py)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise argparse.ArgumentTypeError(
            f"{text}: not a valid seed ({type(exc).__name__}: {exc}); see gce_emulator's docstring"
        ) from None
    return Seed(path, data)


def loopback_host(text: str) -> str:
    """argparse type: a loopback address (the emulator accepts any request without credentials)."""
    if not (text == "localhost" or text.startswith("127.") or text == "::1"):
        raise argparse.ArgumentTypeError(f"the emulator only binds loopback addresses, got {text!r}")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    from gce_emulator import Emulator

    parser = argparse.ArgumentParser(prog="gce-emulator", description="Local Compute Engine API emulator.")
    parser.add_argument(
        "--seed", type=seed_file, default=str(DEMO_SEED), help="YAML/JSON seed file (default: the demo fleet)"
    )
    parser.add_argument("--host", type=loopback_host, default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--port", type=port_number, default=8089, help="port (0 = any free port)")
    parser.add_argument(
        "--time-scale", type=time_scale, default=1.0, help="simulated seconds per real second"
    )
    args = parser.parse_args(argv)
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    try:
        emulator = Emulator(args.seed.data, time_scale=args.time_scale, host=args.host, port=args.port)
    except OSError as exc:  # the port is taken, or the address is not this machine's
        parser.exit(1, f"gce-emulator: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}\n")
    with emulator as emu:
        print(
            f"gce-emulator listening on {emu.url} (seed {args.seed.path}, time x{args.time_scale})",
            flush=True,
        )
        stopped.wait()
    print("gce-emulator stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
