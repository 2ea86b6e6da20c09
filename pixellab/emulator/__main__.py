"""``python -m pixellab.emulator``: serve the emulator until Ctrl-C.

Prints ``export K=V`` lines (``eval``-able) that point the SDKs and pixellab at it; arm faults
with ``curl -X POST {http_url}/__emu/faults -d '{"provider": "replicate", "action":
"rate_limit"}'`` and read the request log at ``{http_url}/__emu/log``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import threading

from pixellab.emulator.server import Emulator


def main(argv: list[str] | None = None) -> int:
    """Parse options, start an :class:`Emulator`, print its environment, wait for Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m pixellab.emulator",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--latency", type=float, default=0.5, help="seconds per job")
    parser.add_argument("--jitter", type=float, default=0.0, help="extra uniform seconds")
    parser.add_argument("--cold-start", type=float, default=0.0,
                        help="extra seconds on each model's first job")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--http-port", type=int, default=0, help="0: any free port")
    parser.add_argument("--https-port", type=int, default=0, help="0: any free port")
    args = parser.parse_args(argv)
    emu = Emulator(latency_s=args.latency, jitter_s=args.jitter, cold_start_s=args.cold_start,
                   seed=args.seed, http_port=args.http_port, https_port=args.https_port)
    with emu:
        for key, value in emu.env().items():
            print(f"export {key}={shlex.quote(value)}")
        print(f"# any non-empty API key works; faults: POST {emu.http_url}/__emu/faults, "
              f"log: GET {emu.http_url}/__emu/log", file=sys.stderr)
        print("# serving on 127.0.0.1 until Ctrl-C", file=sys.stderr)
        sys.stdout.flush()
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
