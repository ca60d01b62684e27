"""Serves DynamoDB and SQS with moto on 127.0.0.1:PORT.

Started by the local stack and the tests, which hold this process's stdin open: when they
exit, for whatever reason, stdin closes and the emulator stops with them. A few patches keep
moto faithful (item operations one at a time, as in DynamoDB) and keep it from being the
bottleneck of a benchmark (costs that grow with the tables or the queues). With
BATON_EMULATOR_METER set to a file path, it also meters the DynamoDB write units the writes
would be billed, by item size, and keeps that file up to date with the totals (see
meter_writes); without it nothing is metered.
"""

import copy
import functools
import json
import logging
import math
import os
import signal
import sys
import threading
import time

import moto.backends
import moto.dynamodb.models
import moto.sqs.models
from moto.dynamodb.exceptions import ConditionalCheckFailed, TransactionCanceledException
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


class _WriteMeter:
    """Running totals of the write units DynamoDB would bill, per table."""

    def __init__(self, trace=None):
        self.lock = threading.Lock()
        self.tables = {}
        self.kinds = {}
        # With BATON_EMULATOR_TRACE naming a file, every metered write is appended there as a
        # JSON line (table, the item's sort key, units): which write costs what.
        self.trace = open(trace, "a", buffering=1) if trace else None
        # Set while a TransactWriteItems runs on this thread: the puts, updates and deletes it
        # makes (and the rollback's) are metered by the transaction, not one by one.
        self.local = threading.local()

    def add(self, table_name, units, key=None, operation="write"):
        sort_key = next((str(v.get("S", v)) for k, v in (key or {}).items() if k == "sk"), "")
        # The item's kind (its sort key up to the first '#': TASK, WORKFLOW, STATS, ...) and the
        # operation: where a unit of work's writes go, without the trace.
        kind = f"{table_name} {sort_key.split('#', 1)[0] or '-'} {operation}"
        with self.lock:
            for totals in (self.tables.setdefault(table_name, {"write_units": 0, "writes": 0}),
                           self.kinds.setdefault(kind, {"write_units": 0, "writes": 0})):
                totals["write_units"] += units
                totals["writes"] += 1
            if self.trace is not None:
                self.trace.write(json.dumps({"table": table_name, "sk": sort_key, "units": units}) + "\n")

    def add_index_writes(self, table_name, before, after, key=None, operation="write"):
        """Meters what the table's global secondary indexes are billed for one item's change
        from `before` to `after` (`_index_entries` of each): under "<table>/<index>"."""
        for name in before.keys() | after.keys():
            units = _index_units(before.get(name), after.get(name))
            if units:
                self.add(f"{table_name}/{name}", units, key, operation)

    def in_transaction(self):
        return getattr(self.local, "transaction", False)

    def totals(self):
        with self.lock:
            tables = {name: dict(t) for name, t in self.tables.items()}
            kinds = {name: dict(t) for name, t in self.kinds.items()}
        index_units = sum(t["write_units"] for name, t in tables.items() if "/" in name)
        return {
            "tables": tables,
            "kinds": kinds,
            "write_units": sum(t["write_units"] for t in tables.values()),
            "index_write_units": index_units,
        }


def _units(*sizes):
    """Write units for an item of the larger of `sizes` bytes: one per KB begun, at least one."""
    return max(1, math.ceil(max(sizes) / 1024))


def _item_size(item):
    return item.size() if item is not None else 0


def _index_entries(table, item):
    """The entries `item` has in the table's global secondary indexes, by index name: its index
    key values and its projected attributes. An item lacking an index key is not in it."""
    if item is None:
        return {}
    entries = {}
    for index in table.global_indexes:
        if all(item.attrs.get(k) is not None for k in index.schema_key_attrs):
            projected = index.project(item)
            keys = tuple(str(item.attrs[k].value) for k in index.schema_key_attrs)
            entries[index.name] = (keys, json.dumps(projected.to_json(), sort_keys=True), projected.size())
    return entries


def _index_units(before, after):
    """DynamoDB's rules for an index on an item's write: a new entry is one put, a removed one a
    delete, a changed index key both, a changed projection one write of the larger entry, and
    an entry whose projected attributes did not change nothing."""
    if before is None and after is None:
        return 0
    if before is None:
        return _units(after[2])
    if after is None:
        return _units(before[2])
    if before[0] != after[0]:
        return _units(before[2]) + _units(after[2])
    if before[1] != after[1]:
        return _units(before[2], after[2])
    return 0


def _key_of(table, attrs):
    names = [table.hash_key_attr] + ([table.range_key_attr] if table.range_key_attr else [])
    return {name: attrs[name] for name in names if name in attrs}


def _stored(backend, table_name, key):
    """The item at `key` as it is now, or None (also when the key or table is invalid)."""
    try:
        return backend.get_item(table_name, key)
    except Exception:
        return None


def meter_writes(meter) -> None:
    """Counts the write units DynamoDB would bill, by item size; moto's ConsumedCapacity is a
    constant. The rules, as DynamoDB states them:
    - PutItem, UpdateItem, DeleteItem, and each put or delete of a BatchWriteItem: one unit per
      KB (1024 bytes) begun of the larger of the item before and the item after, at least one;
    - TransactWriteItems: twice that for each of its items (Put, Update, Delete, and
      ConditionCheck, whose item is unchanged);
    - a write refused by its condition (ConditionalCheckFailed) is billed by the size of the
      item as it is, at least one unit. Choice of this meter: a cancelled transaction is billed
      that way too, each of its items at twice the units of its item as it is. Other errors
      (validation, item too large) are not billed.
    An item's size is moto's Item.size(): the UTF-8 bytes of the attribute names and values
    (numbers by their decimal digits), which approximates DynamoDB's rules (those add a few
    bytes per list, map and number, and count numbers by digit pairs). Each global secondary
    index is billed on its own (`_index_units`), once even in a transaction, by the size of the
    entry's projected attributes; they are metered under "<table>/<index>". Item operations run one at a time (the
    item lock), so the sizes before and after are those of this write alone."""
    original_put = DynamoDBBackend.put_item
    original_update = DynamoDBBackend.update_item
    original_delete = DynamoDBBackend.delete_item
    original_transact = DynamoDBBackend.transact_write_items

    def metered(write, key_of, operation):
        @functools.wraps(write)
        def wrapper(self, table_name, *args, **kwargs):
            if meter.in_transaction():
                return write(self, table_name, *args, **kwargs)
            table = self.get_table(table_name)
            key = key_of(table, *args, **kwargs)
            stored = _stored(self, table.name, key)
            before, indexed = _item_size(stored), _index_entries(table, stored)
            try:
                result = write(self, table_name, *args, **kwargs)
            except ConditionalCheckFailed:
                meter.add(table.name, _units(before), key, f"{operation} refused")
                raise
            stored = _stored(self, table.name, key)
            meter.add(table.name, _units(before, _item_size(stored)), key, operation)
            meter.add_index_writes(table.name, indexed, _index_entries(table, stored), key, operation)
            return result

        return wrapper

    def put_key(table, item_attrs, *args, **kwargs):
        return _key_of(table, item_attrs)

    def given_key(table, key, *args, **kwargs):
        return key

    def transact_write_items(self, transact_items):
        charges = []
        for entry in transact_items:
            _, op = next(iter(entry.items()))
            table = self.tables.get(op.get("TableName"))
            if table is None:
                continue
            key = op["Key"] if "Key" in op else _key_of(table, op.get("Item", {}))
            stored = _stored(self, table.name, key)
            charges.append((table, key, _item_size(stored), _index_entries(table, stored)))
        meter.local.transaction = True
        try:
            result = original_transact(self, transact_items)
        except TransactionCanceledException:
            for table, key, before, _ in charges:
                meter.add(table.name, 2 * _units(before), key, "transaction refused")
            raise
        finally:
            meter.local.transaction = False
        for table, key, before, indexed in charges:
            stored = _stored(self, table.name, key)
            meter.add(table.name, 2 * _units(before, _item_size(stored)), key, "transaction")
            # Index writes are not transactional: billed once.
            meter.add_index_writes(table.name, indexed, _index_entries(table, stored), key, "transaction")
        return result

    DynamoDBBackend.put_item = metered(original_put, put_key, "put")
    DynamoDBBackend.update_item = metered(original_update, given_key, "update")
    DynamoDBBackend.delete_item = metered(original_delete, given_key, "delete")
    DynamoDBBackend.transact_write_items = functools.wraps(original_transact)(transact_write_items)


def publish_meter(meter, path):
    """Writes the meter's totals to `path` as JSON, {"tables": {name: {"write_units": n,
    "writes": n}}, "kinds": {"<table> <item kind> <operation>": the same}, "write_units": total}, every 200 ms: to a temporary file renamed over
    `path`, so a reader never sees half a file. Returns the function that writes them, for
    a last write at exit."""
    def write() -> None:
        temporary = f"{path}.{os.getpid()}.tmp"
        with open(temporary, "w") as f:
            json.dump(meter.totals(), f)
        os.replace(temporary, path)

    def run() -> None:
        while True:
            try:
                write()
            except OSError:
                pass
            time.sleep(0.2)

    threading.Thread(target=run, daemon=True).start()
    return write


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
    # With BATON_EMULATOR_METER naming a file, the write units DynamoDB would bill are
    # metered (inside the item lock, after the rollbacks above) and published there.
    meter_path = os.environ.get("BATON_EMULATOR_METER")
    meter = _WriteMeter(os.environ.get("BATON_EMULATOR_TRACE")) if meter_path else None
    if meter is not None:
        meter_writes(meter)
    serialize_dynamodb_item_access()
    read_one_partition_per_query()
    remove_hot_spots()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    publish = publish_meter(meter, meter_path) if meter is not None else None
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
    if publish is not None:
        publish()


if __name__ == "__main__":
    main()
