"""crail.ray: Ray Datasets sorted and grouped through crail's shuffle, and large objects handed
to Ray tasks through crail's broadcast service.

A sort or group-by here moves its data through the crail shuffle service, not Ray's object
store: map tasks split their block by key range and write it to the crail node of the Ray node
they run on; reduce tasks read a partition from every map and sort it. Only the finished
blocks go to the object store, as the result Dataset::

    import ray, crail.ray

    ray.init(num_cpus=2, resources={"crail:127.0.0.2": 1})
    ctx = crail.ray.Context("/tmp/crail.toml")
    out = crail.ray.sort(ds, "key", context=ctx)              # a materialized Dataset
    sums = crail.ray.groupby(ds, "k", [("v", "sum"), ("v", "mean")], context=ctx)
    model = crail.ray.broadcast(big_object, context=ctx)      # each node fetches it once
    ray.get([predict.remote(model, x) for x in batches])      # model.get() in the task

**Which crail node a task uses**: ``CRAIL_HOST`` in the worker's environment if set; else the
address ``a.b.c.d`` of a custom resource named ``crail:a.b.c.d`` on the task's Ray node (start
each Ray node with one, e.g. ``ray start --resources '{"crail:10.0.0.5": 1}'``); else the
context's ``host``; else the configuration's (its ``local_host``, else 127.0.0.1).

**Fast path**: a table of exactly two fixed-size binary columns, the key column and one
other (TeraSort's 10-byte keys and 90-byte values), is shuffled as fixed-length records: maps
split the key and value columns by range in one pass in Rust, reduces radix-sort in Rust and
hand the key and value columns to Arrow without a copy. Any other table is shuffled as Arrow IPC
streams, one per map and partition, and sorted by Arrow.

Sorts are ascending; rows with equal keys come in an unspecified order (stable within a map
on the fast path). Keys must not be null. Each sort or group-by logs its phases' times to the
``crail.ray`` logger at INFO level.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

try:
    import numpy as np
    import pyarrow as pa
    import ray
except ImportError as e:
    raise ImportError(
        f"crail.ray needs Ray, pyarrow and numpy ({e}): pip install './sdk-python[ray]'"
    ) from e

import crail

__all__ = ["Broadcast", "Context", "broadcast", "groupby", "sort", "sort_blocks"]

log = logging.getLogger(__name__)

#: Keys each map samples for the range partitioner.
SAMPLES_PER_BLOCK = 1000

#: Aggregations `groupby` knows, with how partial results merge.
AGGREGATIONS = ("count", "sum", "min", "max", "mean")


@dataclass(frozen=True)
class Context:
    """Where crail is, for the driver and every task: the client configuration file (what
    ``crail cluster --config-out`` writes; every Ray node must see it at this path), the
    application the shuffles and variables belong to, and the crail node for Ray nodes that
    name none (see the module's doc). Picklable; tasks connect once per worker process."""

    config: str
    app: str = field(default_factory=lambda: f"ray-{random.getrandbits(32):08x}")
    host: str | None = None

    @staticmethod
    def from_env(app: str | None = None) -> Context:
        """The context of ``CRAIL_CONF`` (the configuration file) and ``CRAIL_HOST``."""
        config = os.environ.get("CRAIL_CONF")
        if not config:
            raise crail.InvalidArgument(
                "no crail context: pass context=crail.ray.Context(config_file) or set CRAIL_CONF"
            )
        kwargs: dict[str, Any] = {"host": os.environ.get("CRAIL_HOST")}
        if app:
            kwargs["app"] = app
        return Context(config, **kwargs)

    def node_host(self) -> str | None:
        """The crail node of the Ray node this runs on (None: the configuration's)."""
        if os.environ.get("CRAIL_HOST"):
            return os.environ["CRAIL_HOST"]
        mapped = _mapped_host()
        return mapped or self.host

    def client(self) -> crail.Client:
        """This process's client of the context, on its node's crail node."""
        host = self.node_host()
        key = (self.config, self.app, host)
        with _LOCK:
            c = _CLIENTS.get(key)
            if c is None:
                c = crail.Client.connect(self.config, self.app, host=host)
                _CLIENTS[key] = c
            return c

    def end(self) -> None:
        """The application is over: drops every shuffle and variable it left."""
        self.client().end_application()


_LOCK = threading.Lock()
_CLIENTS: dict[tuple[str, str, str | None], crail.Client] = {}
_NODE_HOST: list[str | None] = []
_VALUES: dict[tuple[str, str, str], Any] = {}


def _mapped_host() -> str | None:
    """The address in a ``crail:ADDRESS`` resource of this Ray node, if it has one."""
    if not _NODE_HOST:
        found = None
        if ray.is_initialized():
            me = ray.get_runtime_context().get_node_id()
            for node in ray.nodes():
                if node.get("NodeID") == me:
                    names = [r for r in node.get("Resources", {}) if r.startswith("crail:")]
                    found = names[0].split(":", 1)[1] if names else None
                    break
        _NODE_HOST.append(found)
    return _NODE_HOST[0]


def _context(context: Context | None) -> Context:
    return context if context is not None else Context.from_env()


def _new_shuffle(ctx: Context, maps: int, partitions: int, serializer: str) -> crail.Shuffle:
    client = ctx.client()
    for _ in range(16):
        try:
            return client.register_shuffle(
                random.getrandbits(31), maps=maps, partitions=partitions, serializer=serializer
            )
        except crail.AlreadyExists:
            continue
    raise crail.CrailError("could not find a free shuffle number in 16 tries")


# ---------------------------------------------------------------------------------------------
# Record layouts.


def _fixed_layout(schema: pa.Schema, key: str) -> tuple[int, int, str] | None:
    """(key bytes, value bytes, value column) when `schema` is a fixed-size binary key and one
    fixed-size binary value: the fast path."""
    if len(schema) != 2 or key not in schema.names:
        return None
    other = next(n for n in schema.names if n != key)
    kt, vt = schema.field(key).type, schema.field(other).type
    if pa.types.is_fixed_size_binary(kt) and pa.types.is_fixed_size_binary(vt):
        if kt.byte_width > 0:
            return kt.byte_width, vt.byte_width, other
    return None


def _fixed_column(arr: pa.Array, width: int) -> memoryview:
    """The bytes of a fixed-size binary array without nulls, in place."""
    if arr.null_count:
        raise crail.InvalidArgument("null keys or values cannot be shuffled as fixed records")
    data = arr.buffers()[1]
    return memoryview(data)[arr.offset * width : (arr.offset + len(arr)) * width]


def _check_key(table: pa.Table, key: str) -> None:
    if key not in table.schema.names:
        raise crail.InvalidArgument(
            f"no column {key!r} to sort or group by (columns: {table.schema.names})"
        )
    if table.column(key).null_count:
        raise crail.InvalidArgument(f"column {key!r} has null keys")


def _ordered(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Keys as numpy values that order as Arrow orders them (bytes and str as Python objects,
    which compare by bytes and by code point, as UTF-8 bytes do)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        return np.array(column.to_pylist(), dtype=object)
    return column.to_numpy(zero_copy_only=False)


# ---------------------------------------------------------------------------------------------
# Tasks.


@ray.remote
def _sample(block: pa.Table, key: str) -> list:
    """Evenly spaced keys of a block."""
    _check_key(block, key)
    n = block.num_rows
    if n == 0:
        return []
    idx = np.linspace(0, n - 1, min(n, SAMPLES_PER_BLOCK)).astype(np.int64)
    return block.column(key).take(pa.array(idx)).to_pylist()


def _partial(block: pa.Table, key: str, aggs: Sequence[tuple[str, str]]) -> pa.Table:
    """A block's partial aggregates (sum and count for a mean), per key."""
    specs = sorted({(column, part) for column, agg in aggs for part in _parts(agg)})
    return block.group_by(key).aggregate(specs)


def _merge(partials: pa.Table, key: str, aggs: Sequence[tuple[str, str]]) -> pa.Table:
    """Final aggregates from partial ones, named as Ray names them (``sum(v)``)."""
    merge = {"sum": "sum", "count": "sum", "min": "min", "max": "max"}
    specs = sorted({(f"{c}_{p}", merge[p]) for c, a in aggs for p in _parts(a)})
    merged = partials.group_by(key).aggregate(specs)
    out = {key: merged.column(key)}
    for column, agg in aggs:
        if agg == "mean":
            total = merged.column(f"{column}_sum_sum").cast(pa.float64())
            count = merged.column(f"{column}_count_sum")
            value = pa.compute.divide(total, count)
        else:
            value = merged.column(f"{column}_{agg}_{merge[agg]}")
        out[f"{agg}({column})"] = value
    return pa.table(out).sort_by([(key, "ascending")])


def _parts(agg: str) -> tuple[str, ...]:
    return ("sum", "count") if agg == "mean" else (agg,)


@ray.remote
def _map(
    ctx: Context,
    shuffle: int,
    m: int,
    block: pa.Table,
    key: str,
    splits: list,
    layout: tuple[int, int, str] | None,
    aggs: list[tuple[str, str]] | None,
) -> int:
    """Writes a block's rows (or their partial aggregates) to the shuffle by key range."""
    s = ctx.client().shuffle(shuffle)
    w = s.map_writer(m, attempt=random.getrandbits(62))
    try:
        if layout is not None:
            klen, vlen, value = layout
            partitioner = crail.RangePartitioner(splits)
            keys, values = block.column(key), block.column(value)
            if [len(c) for c in keys.chunks] != [len(c) for c in values.chunks]:
                keys, values = keys.combine_chunks(), values.combine_chunks()
                keys, values = pa.chunked_array([keys]), pa.chunked_array([values])
            for kc, vc in zip(keys.chunks, values.chunks, strict=True):
                w.write_columns_by_range(
                    partitioner, _fixed_column(kc, klen), _fixed_column(vc, vlen)
                )
        else:
            if aggs is not None:
                block = _partial(block, key, aggs)
            column = block.column(key)
            bounds = _ordered(pa.array(splits, type=column.type))
            owners = np.searchsorted(bounds, _ordered(column), side="right")
            grouped = block.take(pa.array(np.argsort(owners, kind="stable")))
            start = 0
            for p, n in enumerate(np.bincount(owners, minlength=s.partitions)):
                if n:
                    sink = pa.BufferOutputStream()
                    with pa.ipc.new_stream(sink, grouped.schema) as out:
                        out.write_table(grouped.slice(start, n))
                    w.write_record(p, b"", sink.getvalue())
                start += n
        return sum(w.commit())
    except crail.AlreadyExists:
        return 0  # an earlier attempt of this map committed: its output counts
    except BaseException:
        try:
            w.abort()
        except crail.ClosedError:
            pass
        raise


@ray.remote(num_returns=2)
def _reduce(
    ctx: Context,
    shuffle: int,
    p: int,
    key: str,
    schema: pa.Schema,
    layout: tuple[int, int, str] | None,
    aggs: list[tuple[str, str]] | None,
) -> tuple[pa.Table, int]:
    """A partition's rows, sorted (or aggregated), and how many."""
    table = _reduced(ctx.client().shuffle(shuffle), p, key, schema, layout, aggs)
    return table, table.num_rows


def _reduced(
    s: crail.Shuffle,
    p: int,
    key: str,
    schema: pa.Schema,
    layout: tuple[int, int, str] | None,
    aggs: list[tuple[str, str]] | None,
) -> pa.Table:
    if layout is not None:
        klen, vlen, value = layout
        keys, values = s.read_sorted_columns(p)
        n = len(keys) // klen
        columns = {
            key: pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(klen), n, [None, pa.py_buffer(keys)]
            ),
            value: pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(vlen), n, [None, pa.py_buffer(values)]
            ),
        }
        return pa.table([columns[name] for name in schema.names], schema=schema)
    tables = [pa.ipc.open_stream(v).read_all() for _, v in s.records(p)]
    if aggs is not None:
        if not tables:
            return _merge(_partial(schema.empty_table(), key, aggs), key, aggs)
        return _merge(pa.concat_tables(tables), key, aggs)
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    return table.sort_by([(key, "ascending")])


# ---------------------------------------------------------------------------------------------
# The driver's side.


def _shuffle_blocks(
    blocks: list[ray.ObjectRef],
    key: str,
    ctx: Context,
    partitions: int | None,
    aggs: list[tuple[str, str]] | None,
) -> list[ray.ObjectRef]:
    if not blocks:
        return []
    schema = ray.get(_schema.remote(blocks[0]))
    if key not in schema.names:
        raise crail.InvalidArgument(
            f"no column {key!r} to sort or group by (columns: {schema.names})"
        )
    partitions = partitions or len(blocks)
    if partitions < 1:
        raise crail.InvalidArgument(f"partitions must be at least 1, not {partitions}")
    layout = _fixed_layout(schema, key) if aggs is None else None
    clock = time.perf_counter()
    sample = sorted(k for keys in ray.get([_sample.remote(b, key) for b in blocks]) for k in keys)
    splits = [sample[i * len(sample) // partitions] for i in range(1, partitions)] if sample else []
    serializer = f"fixed:{layout[0]}:{layout[1]}" if layout else "kv"
    sid = _new_shuffle(ctx, len(blocks), partitions, serializer).id
    times = [time.perf_counter() - clock]
    try:
        written = ray.get([
            _map.remote(ctx, sid, m, block, key, splits, layout, aggs)
            for m, block in enumerate(blocks)
        ])
        times.append(time.perf_counter() - clock - sum(times))
        out = [_reduce.remote(ctx, sid, p, key, schema, layout, aggs) for p in range(partitions)]
        ray.get([rows for _, rows in out])  # raises a failed reduce's error
        times.append(time.perf_counter() - clock - sum(times))
        log.info(
            "shuffle %d (%s, %d maps, %d partitions, %d bytes): sample %.2f s, map %.2f s, "
            "reduce %.2f s", sid, serializer, len(blocks), partitions, sum(written), *times,
        )
        return [table for table, _ in out]
    finally:
        ctx.client().unregister_shuffle(sid)


@ray.remote
def _schema(block: pa.Table) -> pa.Schema:
    return block.schema


def sort_blocks(
    blocks: Sequence[ray.ObjectRef],
    key: str,
    *,
    context: Context | None = None,
    partitions: int | None = None,
) -> list[ray.ObjectRef]:
    """Sorts the rows of Arrow tables in Ray's object store (plain Ray tasks' outputs) by
    column `key` through crail's shuffle: returns references to the sorted blocks, partition
    0's (the lowest keys) first. `partitions` defaults to the number of blocks."""
    return _shuffle_blocks(list(blocks), key, _context(context), partitions, None)


def sort(
    ds: ray.data.Dataset,
    key: str,
    *,
    context: Context | None = None,
    partitions: int | None = None,
) -> ray.data.Dataset:
    """A Dataset's rows sorted by column `key`, through crail's shuffle: runs now and returns
    the materialized result."""
    refs = sort_blocks(ds.to_arrow_refs(), key, context=context, partitions=partitions)
    return ray.data.from_arrow_refs(refs)


def groupby(
    ds: ray.data.Dataset,
    key: str,
    aggregations: Sequence[tuple[str, str]],
    *,
    context: Context | None = None,
    partitions: int | None = None,
) -> ray.data.Dataset:
    """Rows grouped by column `key` with `aggregations`, ``(column, "count" | "sum" | "min" |
    "max" | "mean")`` pairs, through crail's shuffle (maps send partial aggregates). One row per
    key, in key order, with columns named as Ray Data names them: ``key``, ``sum(v)``, ..."""
    aggs = [(str(c), str(a)) for c, a in aggregations]
    bad = [a for _, a in aggs if a not in AGGREGATIONS]
    if bad or not aggs:
        raise crail.InvalidArgument(
            f"aggregations must be (column, one of {', '.join(AGGREGATIONS)}) pairs, got "
            f"{list(aggregations)!r}"
        )
    refs = _shuffle_blocks(ds.to_arrow_refs(), key, _context(context), partitions, aggs)
    return ray.data.from_arrow_refs(refs)


# ---------------------------------------------------------------------------------------------
# Broadcast.


@dataclass(frozen=True)
class Broadcast:
    """A broadcast variable: send this handle to tasks and call `get()` there. Each crail node
    fetches the value from the store once, whatever its readers; each worker process keeps what
    it read."""

    context: Context
    id: str
    size: int
    pickled: bool

    def get(self) -> Any:
        """The value (the bytes put, or the object put, unpickled)."""
        key = (self.context.config, self.context.app, self.id)
        with _LOCK:
            if key in _VALUES:
                return _VALUES[key]
        data = self.context.client().get_broadcast(self.id)
        value = pickle.loads(data) if self.pickled else data
        with _LOCK:
            _VALUES[key] = value
        return value

    def destroy(self) -> None:
        """Frees the value everywhere; later `get()`s raise NotFound (or return what a worker
        kept)."""
        self.context.client().destroy_broadcast(self.id)


def broadcast(value: Any, *, context: Context | None = None, id: str | None = None) -> Broadcast:
    """Puts `value` (bytes-like, stored as is; any other object, pickled) as a broadcast
    variable and returns its handle."""
    ctx = _context(context)
    pickled = not isinstance(value, (bytes, bytearray, memoryview))
    data = pickle.dumps(value, protocol=5) if pickled else value
    id = id or f"ray-{random.getrandbits(48):012x}"
    size = ctx.client().put_broadcast(id, data)
    return Broadcast(ctx, id, size, pickled)
