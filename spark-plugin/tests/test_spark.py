"""Spark (the pyspark package's, in local-cluster[2,1,1024] mode: two executor JVMs) with crail's
shuffle manager against a real crail cluster: RDD and SQL jobs, AQE on, each equal to the same
job on Spark's own shuffle."""

import operator

import pytest

pyspark = pytest.importorskip("pyspark")
import crail  # noqa: E402
from conftest import HOSTS  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402


def session(extra):
    builder = (
        SparkSession.builder.master("local-cluster[2,1,1024]")
        .appName("crail-spark-test")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.sql.adaptive.enabled", "true")
        .config("spark.sql.adaptive.coalescePartitions.enabled", "true")
        .config("spark.sql.adaptive.advisoryPartitionSizeInBytes", "16k")
        .config("spark.sql.autoBroadcastJoinThreshold", "-1")
    )
    for k, v in extra.items():
        builder = builder.config(k, v)
    return builder.getOrCreate()


def jobs(spark):
    """Every job's result, in a form to compare."""
    sc = spark.sparkContext
    nums = sc.parallelize(range(60_000), 6).map(lambda x: (x % 997, x))
    out = {}
    out["reduceByKey"] = sorted(nums.reduceByKey(operator.add, 5).collect())
    out["groupByKey"] = sorted(
        (k, sorted(vs)) for k, vs in nums.groupByKey(4).collect()
    )
    words = sc.parallelize([f"w{i % 313}-{i % 7}" for i in range(40_000)], 5)
    out["sortByKey"] = words.map(lambda w: (w, 1)).sortByKey(numPartitions=4).collect()
    left = nums.filter(lambda kv: kv[1] % 3 == 0)
    right = sc.parallelize([(k, f"name{k}") for k in range(0, 997, 2)], 3)
    out["join"] = sorted(left.join(right, 6).collect())
    df = spark.range(0, 200_000).selectExpr(
        "id", "id % 101 AS k", "cast(id * 7 % 1000 AS int) AS v")
    df.createOrReplaceTempView("t")
    names = spark.range(0, 101).selectExpr("id AS k", "concat('n', id) AS name")
    names.createOrReplaceTempView("d")
    out["sql_group"] = [tuple(r) for r in spark.sql(
        "SELECT k, count(*), sum(v), max(v) FROM t GROUP BY k ORDER BY k").collect()]
    out["sql_join"] = [tuple(r) for r in spark.sql(
        "SELECT d.name, sum(t.v) s FROM t JOIN d ON t.k = d.k GROUP BY d.name "
        "ORDER BY s DESC, d.name LIMIT 20").collect()]
    out["sql_window"] = [tuple(r) for r in spark.sql(
        "SELECT k, v, rank() OVER (PARTITION BY k ORDER BY v DESC, id) r FROM t "
        "WHERE id < 5000 ORDER BY k, r, v").collect()]
    return out


@pytest.fixture(scope="module")
def vanilla():
    """The jobs' results on Spark's own shuffle."""
    spark = session({})
    try:
        return jobs(spark)
    finally:
        spark.stop()


def test_jobs_equal_sparks_own_shuffle(vanilla, cluster, jar):
    spark = session({
        "spark.jars": jar,
        "spark.executor.extraClassPath": jar,
        "spark.shuffle.manager": "io.crail.spark.CrailShuffleManager",
        "spark.crail.config": cluster,
    })
    try:
        app = spark.sparkContext.applicationId
        got = jobs(spark)
        # The shuffles went through crail: the application's are there until it ends.
        with crail.Client.connect(cluster, "spark-test-check", host=HOSTS[0]) as c:
            assert len(c.list(f"/crail-shuffle/{app}")) >= 10
    finally:
        spark.stop()
    for name, want in vanilla.items():
        assert got[name] == want, name
    with crail.Client.connect(cluster, "spark-test-check", host=HOSTS[0]) as c:
        assert app not in c.list("/crail-shuffle")
