"""Serves DynamoDB and SQS with moto on 127.0.0.1:PORT.

Started by the local stack and the tests, which hold this process's stdin open: when they
exit, for whatever reason, stdin closes and the emulator stops with them.
"""

import signal
import sys
import threading

from moto.server import ThreadedMotoServer


def main() -> None:
    port = int(sys.argv[1])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    print(f"ready {port}", flush=True)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def wait_for_stdin_to_close() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_for_stdin_to_close, daemon=True).start()
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
