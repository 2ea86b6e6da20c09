"""``python -m pixellab.emulator``: serve the emulator until Ctrl-C (SIGINT) or SIGTERM.

Prints ``export K=V`` lines (``eval``-able) that point the SDKs and pixellab at it; arm faults
with ``curl -X POST {http_url}/__emu/faults -d '{"provider": "replicate", "action":
"rate_limit"}'`` and read the request log at ``{http_url}/__emu/log``.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import socket
import sys
from collections.abc import Callable
from types import FrameType

from pixellab.emulator.server import Emulator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def serve_until_signalled(emulator: Emulator, announce: Callable[[Emulator], None]
                          ) -> signal.Signals:
    """Start ``emulator``, call ``announce(emulator)``, serve until SIGINT or SIGTERM, then stop
    it, which deletes its temp dir and the TLS private key in it; returns the signal.

    Both handlers are its own while it runs, so a SIGINT that a shell's ``cmd &`` left ignored
    still stops it; a signal that arrives during start-up stops it as soon as it has started.
    Call it from the main thread (Python delivers signals there only); the previous handlers
    are back when it returns or raises.
    """
    # The interpreter's C-level handler writes the signal number to the wakeup socket; the
    # main thread sleeps in recv() on its other end, so no Python handler has to take a lock.
    woken, waker = socket.socketpair()
    waker.setblocking(False)
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    previous_fd = signal.set_wakeup_fd(waker.fileno(), warn_on_full_buffer=False)
    try:
        for signum in STOP_SIGNALS:
            signal.signal(signum, _noted)
        with emulator:
            announce(emulator)
            received = woken.recv(1)
        return signal.Signals(received[0])
    finally:
        signal.set_wakeup_fd(previous_fd)
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        woken.close()
        waker.close()


def _noted(signum: int, frame: FrameType | None) -> None:
    """The wakeup socket already has the signal; nothing is left to do here."""


def main(argv: list[str] | None = None) -> int:
    """Parse options, start an :class:`Emulator`, print its environment, serve until a signal."""
    parser = argparse.ArgumentParser(prog="python -m pixellab.emulator",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--latency", type=float, default=0.5, help="seconds per job")
    parser.add_argument("--jitter", type=float, default=0.0, help="extra uniform seconds")
    parser.add_argument("--cold-start", type=float, default=0.0,
                        help="extra seconds on each model's first job")
    parser.add_argument("--video-latency", type=float, default=3.0,
                        help="seconds per video job (minutes in reality)")
    parser.add_argument("--video-fps", type=float, default=None,
                        help="frame rate of the clips made (default: the model's own)")
    parser.add_argument("--video-max-side", type=int, default=None,
                        help="cap on the clips' longer side in pixels (default: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--http-port", type=int, default=0, help="0: any free port")
    parser.add_argument("--https-port", type=int, default=0, help="0: any free port")
    args = parser.parse_args(argv)
    emu = Emulator(latency_s=args.latency, jitter_s=args.jitter, cold_start_s=args.cold_start,
                   seed=args.seed, http_port=args.http_port, https_port=args.https_port,
                   video_latency_s=args.video_latency, video_fps=args.video_fps,
                   video_max_side=args.video_max_side)

    def announce(emu: Emulator) -> None:
        for key, value in emu.env().items():
            print(f"export {key}={shlex.quote(value)}")
        print(f"# any non-empty API key works; faults: POST {emu.http_url}/__emu/faults, "
              f"log: GET {emu.http_url}/__emu/log", file=sys.stderr)
        print("# serving on 127.0.0.1 until Ctrl-C or SIGTERM", file=sys.stderr)
        sys.stdout.flush()

    received = serve_until_signalled(emu, announce)
    print(f"# stopped ({received.name})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
