"""crail.ray on a real Ray (`ray.init(num_cpus=2)`, its node served by crail node 127.0.0.2):
sorts and group-bys of Datasets and of plain tasks' outputs through the crail shuffle, equal
to Ray Data's own; bad input."""

import numpy as np
import pyarrow as pa
import pytest

ray = pytest.importorskip("ray")

import crail  # noqa: E402
import crail.ray  # noqa: E402
from ray.data.aggregate import Count, Max, Mean, Min, Sum  # noqa: E402


@pytest.fixture(scope="module")
def ctx(cluster):
    ray.init(num_cpus=2, resources={"crail:127.0.0.2": 1}, include_dashboard=False,
             log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    context = crail.ray.Context(cluster, app="py-ray")
    yield context
    context.end()
    ray.shutdown()


def records(blocks, rows, seed=1):
    """Blocks of 10-byte keys (some repeated) and 90-byte values."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(blocks):
        data = rng.integers(0, 256, size=(rows, 100), dtype=np.uint8)
        data[::5, :10] = data[1::5, :10][: len(data[::5])]  # duplicate keys
        keys = np.ascontiguousarray(data[:, :10])
        values = np.ascontiguousarray(data[:, 10:])
        out.append(pa.table({
            "key": pa.FixedSizeBinaryArray.from_buffers(pa.binary(10), rows,
                                                        [None, pa.py_buffer(keys)]),
            "value": pa.FixedSizeBinaryArray.from_buffers(pa.binary(90), rows,
                                                          [None, pa.py_buffer(values)]),
        }))
    return out


def rows(ds, *columns):
    table = pa.concat_tables(ray.get(ds.to_arrow_refs()))
    return [tuple(r[c] for c in columns) for r in table.to_pylist()]


def test_sort_of_fixed_records_equals_rays(ctx):
    ds = ray.data.from_arrow(records(4, 20_000))
    ours = crail.ray.sort(ds, "key", context=ctx, partitions=3)
    theirs = ds.sort("key")
    assert ours.num_blocks() == 3
    assert ours.schema().names == ["key", "value"]
    got, want = rows(ours, "key", "value"), rows(theirs, "key", "value")
    assert [k for k, _ in got] == [k for k, _ in want]
    assert sorted(got) == sorted(want)
    assert len(got) == 80_000


def test_sort_of_other_columns_equals_rays(ctx):
    rng = np.random.default_rng(2)
    blocks = [
        pa.table({
            "k": rng.integers(-1000, 1000, 3000),
            "s": [f"name-{i}" for i in rng.integers(0, 500, 3000)],
            "f": rng.random(3000),
        })
        for _ in range(3)
    ]
    ds = ray.data.from_arrow(blocks)
    for key in ("k", "s"):
        ours = crail.ray.sort(ds, key, context=ctx, partitions=4)
        want = rows(ds.sort(key), "k", "s", "f")
        got = rows(ours, "k", "s", "f")
        index = ["k", "s"].index(key)
        assert [r[index] for r in got] == [r[index] for r in want]
        assert sorted(got) == sorted(want)


def test_groupby_equals_rays(ctx):
    rng = np.random.default_rng(3)
    blocks = [
        pa.table({"k": rng.integers(0, 97, 5000), "v": rng.integers(-50, 50, 5000)})
        for _ in range(4)
    ]
    ds = ray.data.from_arrow(blocks)
    aggs = [("v", "sum"), ("v", "count"), ("v", "min"), ("v", "max"), ("v", "mean")]
    ours = crail.ray.groupby(ds, "k", aggs, context=ctx, partitions=3)
    theirs = ds.groupby("k").aggregate(Sum("v"), Count("v"), Min("v"), Max("v"), Mean("v"))
    names = ["k", "sum(v)", "count(v)", "min(v)", "max(v)", "mean(v)"]
    assert ours.schema().names == names
    got, want = rows(ours, *names), rows(theirs.sort("k"), *names)
    assert [r[:5] for r in got] == [r[:5] for r in want]
    assert np.allclose([r[5] for r in got], [r[5] for r in want])
    assert len(got) == 97
    # String keys too.
    text = "the cat and the hat and the bat"
    words = ray.data.from_items([{"w": w, "n": 1} for w in text.split()])
    counts = crail.ray.groupby(words, "w", [("n", "sum")], context=ctx)
    assert rows(counts, "w", "sum(n)") == [("and", 2), ("bat", 1), ("cat", 1), ("hat", 1),
                                           ("the", 3)]


def test_sort_of_plain_tasks_outputs(ctx):
    @ray.remote
    def produce(i):
        return pa.table({"k": np.arange(i, 10_000, 7, dtype=np.int64)[::-1]})

    refs = [produce.remote(i) for i in range(7)]
    out = crail.ray.sort_blocks(refs, "k", context=ctx, partitions=5)
    assert len(out) == 5
    keys = [k for t in ray.get(out) for k in t.column("k").to_pylist()]
    assert keys == list(range(10_000))
    # The shuffles are gone once the sorts are done.
    assert ctx.client().list("/crail-shuffle/py-ray") == []


def test_bad_input(ctx, monkeypatch):
    ds = ray.data.from_arrow(records(1, 100))
    with pytest.raises(crail.InvalidArgument, match="no column 'nope'"):
        crail.ray.sort(ds, "nope", context=ctx)
    with pytest.raises(crail.InvalidArgument, match="aggregations"):
        crail.ray.groupby(ds, "key", [("value", "median")], context=ctx)
    with pytest.raises(crail.InvalidArgument, match="partitions"):
        crail.ray.sort(ds, "key", context=ctx, partitions=-1)
    monkeypatch.delenv("CRAIL_CONF", raising=False)
    with pytest.raises(crail.InvalidArgument, match="CRAIL_CONF"):
        crail.ray.sort(ds, "key")
    nulls = ray.data.from_arrow(pa.table({"k": [1, None, 3]}))
    with pytest.raises(crail.InvalidArgument, match="null keys"):
        crail.ray.sort(nulls, "k", context=ctx)
    bad = crail.ray.Context("/no/such/client.toml", app="py-ray-bad")
    with pytest.raises(crail.CrailError, match="/no/such/client.toml"):
        crail.ray.sort(ds, "key", context=bad)
    assert ctx.client().list("/crail-shuffle/py-ray") == []
