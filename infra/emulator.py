"""Serves DynamoDB and SQS with moto on 127.0.0.1:PORT.

Started by the local stack and the tests, which hold this process's stdin open: when they
exit, for whatever reason, stdin closes and the emulator stops with them. A few patches keep
moto faithful (item operations one at a time, as in DynamoDB) and keep it from being the
bottleneck of a benchmark (costs that grow with the tables or the queues).
"""

import copy
import functools
import logging
import signal
import sys
import threading
import time

import moto.backends
import moto.dynamodb.models
import moto.sqs.models
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.table import Table
from moto.dynamodb.responses import DynamoHandler
from moto.server import ThreadedMotoServer


def serialize_dynamodb_item_access() -> None:
    """DynamoDB applies the writes to one item one at a time; moto's threaded server does not,
    and two concurrent UpdateItem calls on one item can lose an update (a counter decremented
    once instead of twice). Baton's exactly-once steps rely on DynamoDB's guarantee, so the
    emulator restores it: its item operations run one at a time. The request handlers of the
    writes hold the same lock around the whole request, because they read the item they return
    as ReturnValues (ALL_OLD, UPDATED_OLD) apart from the write itself: under concurrency a
    write could answer with another write's old value, which DynamoDB never does."""
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
    for name in ("put_item", "update_item", "delete_item"):
        setattr(DynamoHandler, name, locked(getattr(DynamoHandler, name)))


def make_failed_updates_atomic() -> None:
    """An UpdateItem that DynamoDB refuses (the item would pass 400 KB) changes nothing;
    moto applies the expression's actions one by one and raises at the one that makes the
    item too large, leaving the ones before applied. The emulator puts the item back as it
    was when an update raises, as DynamoDB does."""
    original = DynamoDBBackend.update_item

    @functools.wraps(original)
    def update_item(self, table_name, key, *args, **kwargs):
        table = self.get_table(table_name)
        hash_value, range_value = self.get_keys_value(table, key)
        before = table.get_item(hash_value, range_value)
        saved = copy.deepcopy(before.attrs) if before is not None else None
        try:
            return original(self, table_name, key, *args, **kwargs)
        except Exception:
            after = table.get_item(hash_value, range_value)
            if saved is not None and after is not None:
                after.attrs = saved
            elif saved is None and after is not None:
                table.delete_item(hash_value, range_value)
            raise

    DynamoDBBackend.update_item = update_item


def remove_hot_spots() -> None:
    """Costs that grow with load and make moto, not the code under test, the bottleneck of a
    benchmark; the behaviour is unchanged:
    - SQS reads the clock through datetime arithmetic for every message it scans, on every
      receive and every wake-up of a long poll: it reads the same epoch milliseconds from
      time.time();
    - the request dispatcher lists moto's package directory on every request: the listing is
      read once;
    - the HTTP server formats a log line per request that nobody reads."""
    original_millis = moto.sqs.models.unix_time_millis

    def unix_time_millis(dt=None):
        return time.time() * 1000.0 if dt is None else original_millis(dt)

    moto.sqs.models.unix_time_millis = unix_time_millis

    modules = tuple(moto.backends.list_of_moto_modules())
    moto.backends.list_of_moto_modules = lambda: iter(modules)
    # One log line per request, formatted and then thrown away (stderr is /dev/null).
    logging.getLogger("werkzeug").setLevel(logging.ERROR)


class _TablesAsTheyAre:
    """Stands in for the `copy` module inside a transaction: tables are not copied."""

    @staticmethod
    def deepcopy(value, memo=None):
        return value if isinstance(value, Table) else copy.deepcopy(value, memo)


def snapshot_only_touched_items() -> None:
    """moto snapshots every table a transaction touches, whole, once per item of the
    transaction, to roll back if the transaction is cancelled: its cost grows with the table
    (the learner's outcome history), not with the transaction. Item operations already run one
    at a time (above), so saving just the items the transaction names, and putting them back
    if it is cancelled, is the same rollback."""
    original = DynamoDBBackend.transact_write_items

    def transact_write_items(self, transact_items):
        saved = []
        for entry in transact_items:
            _, op = next(iter(entry.items()))
            table = self.tables.get(op.get("TableName"))
            if table is None:
                continue
            if "Key" in op:
                key = op["Key"]
            else:
                names = [table.hash_key_attr] + ([table.range_key_attr] if table.range_key_attr else [])
                key = {name: op["Item"][name] for name in names if name in op.get("Item", {})}
            current = self.get_item(op["TableName"], key)
            saved.append((op["TableName"], key, current.to_json()["Attributes"] if current else None))
        moto.dynamodb.models.copy = _TablesAsTheyAre
        try:
            return original(self, transact_items)
        except Exception:
            for table_name, key, attributes in saved:
                if attributes is not None:
                    self.put_item(table_name, attributes)
                elif self.get_item(table_name, key) is not None:
                    self.delete_item(table_name, key)
            raise
        finally:
            moto.dynamodb.models.copy = copy

    DynamoDBBackend.transact_write_items = transact_write_items


def read_one_partition_per_query() -> None:
    """moto answers a Query on a table's own key by walking and sorting every item of the table
    to keep one partition: its cost grows with the table, not with the partition. It is given
    the partition's items alone (it still filters and sorts them itself). Queries on an index
    are left as they are."""
    original = Table.query

    def query(self, hash_key, *args, **kwargs):
        index_name = args[6] if len(args) > 6 else kwargs.get("index_name")
        if index_name or hash_key is None:
            return original(self, hash_key, *args, **kwargs)
        partition = self.items.get(hash_key)
        if partition is None:
            members = []
        elif isinstance(partition, dict):
            members = list(partition.values())
        else:
            members = [partition]
        # Item operations run one at a time, so this instance attribute is seen by this
        # query alone.
        self.all_items = lambda: members
        try:
            return original(self, hash_key, *args, **kwargs)
        finally:
            del self.all_items

    Table.query = query


def main() -> None:
    port = int(sys.argv[1])
    # The order matters: the snapshotting transaction runs inside the item lock.
    snapshot_only_touched_items()
    make_failed_updates_atomic()
    serialize_dynamodb_item_access()
    read_one_partition_per_query()
    remove_hot_spots()
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
