"""Serves DynamoDB and SQS with moto on 127.0.0.1:PORT.

Started by the local stack and the tests, which hold this process's stdin open: when they
exit, for whatever reason, stdin closes and the emulator stops with them.
"""

import functools
import signal
import sys
import threading

from moto.dynamodb.models import DynamoDBBackend
from moto.server import ThreadedMotoServer


def serialize_dynamodb_item_access() -> None:
    """DynamoDB applies the writes to one item one at a time; moto's threaded server does not,
    and two concurrent UpdateItem calls on one item can lose an update (a counter decremented
    once instead of twice). Baton's exactly-once steps rely on DynamoDB's guarantee, so the
    emulator restores it: its item operations run one at a time."""
    lock = threading.RLock()

    def locked(method):
        @functools.wraps(method)
        def wrapper(*args, **kwargs):
            with lock:
                return method(*args, **kwargs)

        return wrapper

    for name in ("put_item", "update_item", "delete_item", "transact_write_items",
                 "get_item", "query", "scan"):
        setattr(DynamoDBBackend, name, locked(getattr(DynamoDBBackend, name)))


def main() -> None:
    port = int(sys.argv[1])
    serialize_dynamodb_item_access()
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
