"""A Spark SQL workload as an analyst runs it: spark.sql.shuffle.partitions at Spark's default
of 200, joins and aggregations over a few hundred MB, several shuffles alive at once, on a
2-node crail cluster whose DRAM holds a fraction of them; the shuffles go on into the nodes'
flash and every result equals the same queries on Spark's own shuffle."""

import subprocess
import time

import pytest

pyspark = pytest.importorskip("pyspark")
import crail  # noqa: E402
from crail_cluster import CRAIL, crail_cluster  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402

HOSTS = ["127.0.0.2", "127.0.0.3"]


def session(extra):
    builder = (
        SparkSession.builder.master("local-cluster[2,1,1024]")
        .appName("crail-sql-wide-test")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "200")
        # Every partition stays a reduce task, and joins shuffle both sides.
        .config("spark.sql.adaptive.enabled", "false")
        .config("spark.sql.autoBroadcastJoinThreshold", "-1")
    )
    for k, v in extra.items():
        builder = builder.config(k, v)
    return builder.getOrCreate()


def queries(spark):
    """The results, in a form to compare. The tables stay cached and their shuffles alive
    while the next queries run."""
    orders = spark.range(0, 1_500_000, 1, 8).selectExpr(
        "id", "id % 50021 AS customer", "cast(id * 7919 % 100000 AS int) AS amount",
        "repeat(cast(id % 97 AS string), 40) AS note")
    orders.createOrReplaceTempView("orders")
    customers = spark.range(0, 50021, 1, 4).selectExpr(
        "id AS customer", "concat('c', id % 113) AS region", "id % 7 AS tier")
    customers.createOrReplaceTempView("customers")
    out = {}
    # Several shuffles kept alive: an aggregated, cached table reused by later queries.
    per_customer = spark.sql(
        "SELECT customer, count(*) n, sum(amount) total, max(length(note)) longest "
        "FROM orders GROUP BY customer")
    per_customer.cache().count()
    per_customer.createOrReplaceTempView("per_customer")
    out["join_group"] = [tuple(r) for r in spark.sql(
        "SELECT c.region, sum(o.amount) s, count(*) n FROM orders o JOIN customers c "
        "ON o.customer = c.customer GROUP BY c.region ORDER BY c.region").collect()]
    out["join_cached"] = [tuple(r) for r in spark.sql(
        "SELECT c.tier, sum(p.total) t, sum(p.n) n, max(p.longest) l FROM per_customer p "
        "JOIN customers c ON p.customer = c.customer GROUP BY c.tier ORDER BY c.tier").collect()]
    out["distinct"] = spark.sql(
        "SELECT count(DISTINCT note, amount % 1000) FROM orders").collect()[0][0]
    out["top"] = [tuple(r) for r in spark.sql(
        "SELECT customer, total FROM per_customer ORDER BY total DESC, customer "
        "LIMIT 25").collect()]
    out["self_join"] = spark.sql(
        "SELECT count(*), sum(a.amount - b.amount) FROM orders a JOIN orders b "
        "ON a.id = b.id + 1").collect()[0][:]
    return out


@pytest.fixture(scope="module")
def vanilla():
    spark = session({})
    try:
        start = time.monotonic()
        out = queries(spark)
        print(f"Spark's own shuffle: {time.monotonic() - start:.1f} s")
        return out
    finally:
        spark.stop()


@pytest.fixture(scope="module")
def wide_cluster(tmp_path_factory):
    """Two nodes of 128 MiB of DRAM each (a 200-partition shuffle's group files alone need
    more), 8 GiB of flash each behind it."""
    work = tmp_path_factory.mktemp("wide")
    flash = work / "flash"
    flash.mkdir()
    with crail_cluster(work, dram="128MiB", nodes=2,
                       extra=("--flash", "8GiB", "--flash-dir", str(flash))) as config:
        yield config


def test_a_200_partition_sql_workload_beyond_dram_equals_sparks_own_shuffle(
        vanilla, wide_cluster, jar):
    spark = session({
        "spark.shuffle.manager": "io.crail.spark.CrailShuffleManager",
        "spark.jars": jar,
        "spark.executor.extraClassPath": jar,
        "spark.crail.config": wide_cluster,
        # Uncompressed, so the shuffles outgrow the DRAM tier (compressed they fit in it).
        "spark.shuffle.compress": "false",
    })
    app = spark.sparkContext.applicationId
    try:
        start = time.monotonic()
        got = queries(spark)
        print(f"crail's shuffle: {time.monotonic() - start:.1f} s")
        with crail.Client.connect(wide_cluster, "sql-wide-check", host=HOSTS[0]) as c:
            # Several shuffles alive at once, and the store past its DRAM.
            assert len(c.list(f"/crail-shuffle/{app}")) >= 5
        df = subprocess.run([CRAIL, "--config", wide_cluster, "fs", "-df", "-b"],
                            capture_output=True, text=True, check=True).stdout
    finally:
        spark.stop()
    print(df)
    for name, want in vanilla.items():
        assert got[name] == want, name
    # tier class datanodes capacity used free use%
    rows = {line.split()[0]: line.split() for line in df.splitlines() if line.strip()}
    assert int(rows["dram"][4]) == int(rows["dram"][3]), df
    assert int(rows["flash"][4]) > 0, df
