"""crail.ray on a Ray cluster of three nodes (ray.cluster_utils.Cluster), each served by its
own crail node (a `crail:127.0.0.x` resource): a broadcast read by tasks on every node, each
node fetching it once; a sort on the three nodes."""

import hashlib

import numpy as np
import pyarrow as pa
import pytest

ray = pytest.importorskip("ray")

import crail  # noqa: E402
import crail.ray  # noqa: E402
from conftest import HOSTS  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402


@pytest.fixture(scope="module")
def ctx(cluster):
    nodes = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "resources": {f"crail:{HOSTS[0]}": 1},
                        "include_dashboard": False},
    )
    for host in HOSTS[1:]:
        nodes.add_node(num_cpus=1, resources={f"crail:{host}": 1})
    ray.init(address=nodes.address, log_to_driver=False)
    nodes.wait_for_nodes()
    ray.data.DataContext.get_current().enable_progress_bars = False
    context = crail.ray.Context(cluster, app="py-ray-nodes")
    yield context
    context.end()
    ray.shutdown()
    nodes.shutdown()


@ray.remote(num_cpus=0)
def read(model):
    value = model.get()
    digest = hashlib.sha256(value["weights"].tobytes()).hexdigest()
    return model.context.node_host(), value["name"], digest


def test_broadcast_is_fetched_once_per_node(ctx, cluster):
    weights = np.random.default_rng(5).random(1 << 20)  # 8 MiB
    model = crail.ray.broadcast({"name": "m1", "weights": weights}, context=ctx)
    assert model.pickled and model.size > weights.nbytes
    tasks = [
        read.options(resources={f"crail:{host}": 0.1}).remote(model)
        for host in HOSTS
        for _ in range(3)
    ]
    results = ray.get(tasks)
    want = hashlib.sha256(weights.tobytes()).hexdigest()
    assert sorted(results) == sorted((h, "m1", want) for h in HOSTS for _ in range(3))
    for host in HOSTS:
        with crail.Client.connect(cluster, ctx.app, host=host) as c:
            assert c.broadcast_fetches(model.id) == 1, host
    # Bytes are stored and returned as they are.
    raw = crail.ray.broadcast(b"\x00" * 1000, context=ctx, id="raw")
    assert not raw.pickled and raw.get() == b"\x00" * 1000
    with pytest.raises(crail.AlreadyExists):
        crail.ray.broadcast(b"again", context=ctx, id="raw")
    model.destroy()
    with crail.Client.connect(cluster, ctx.app, host=HOSTS[1]) as c:
        with pytest.raises(crail.NotFound):
            c.get_broadcast(model.id)


def test_sort_across_nodes(ctx):
    rng = np.random.default_rng(6)
    blocks = [pa.table({"k": rng.integers(0, 1 << 40, 20_000)}) for _ in range(6)]
    ds = ray.data.from_arrow(blocks)
    out = crail.ray.sort(ds, "k", context=ctx, partitions=6)
    keys = pa.concat_tables(ray.get(out.to_arrow_refs())).column("k").to_pylist()
    assert keys == sorted(k for b in blocks for k in b.column("k").to_pylist())
