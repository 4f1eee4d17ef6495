"""Spark (the pyspark package's, in local-cluster[2,1,1024] mode: two executor JVMs) with crail's
shuffle manager against a real crail cluster: RDD and SQL jobs, AQE on (coalescing, a skewed
join split into map ranges), each equal to the same job on Spark's own shuffle; the same jobs
with map and reduce tasks failing on their first attempt; a CrailBroadcast read by every
executor."""

import hashlib
import operator
import os

import pytest

pyspark = pytest.importorskip("pyspark")
import crail  # noqa: E402
from conftest import HOSTS  # noqa: E402
from pyspark import SparkContext, TaskContext  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402

CRAIL_SPARK = {
    "spark.shuffle.manager": "io.crail.spark.CrailShuffleManager",
}


def forget_failed_settings():
    """A SparkContext that failed in its constructor leaves its settings behind as JVM system
    properties, which every later SparkConf in this process reads: the crail ones, and the
    shuffle and dynamic allocation ones the tests set, go."""
    jvm = SparkContext._jvm
    if jvm is None:
        return
    for name in list(jvm.System.getProperties().stringPropertyNames()):
        if name.startswith(("spark.crail.", "spark.shuffle.", "spark.dynamicAllocation.")):
            jvm.System.clearProperty(name)


def session(extra):
    forget_failed_settings()
    builder = (
        SparkSession.builder.master("local-cluster[2,1,1024]")
        .appName("crail-spark-test")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.sql.adaptive.enabled", "true")
        .config("spark.sql.adaptive.coalescePartitions.enabled", "true")
        .config("spark.sql.adaptive.advisoryPartitionSizeInBytes", "16k")
        .config("spark.sql.autoBroadcastJoinThreshold", "-1")
        # Small thresholds, so AQE splits the skewed join below (its reads take map ranges).
        .config("spark.sql.adaptive.skewJoin.skewedPartitionThresholdInBytes", "4k")
        .config("spark.sql.adaptive.skewJoin.skewedPartitionFactor", "2")
    )
    for k, v in extra.items():
        builder = builder.config(k, v)
    return builder.getOrCreate()


def crail_session(cluster, jar, settings=None):
    """A session on crail's shuffle through the cluster of config file `cluster`."""
    return session({
        **CRAIL_SPARK,
        "spark.jars": jar,
        "spark.executor.extraClassPath": jar,
        "spark.crail.config": cluster,
        **(settings or {}),
    })


def jobs(spark, flaky=False):
    """Every job's result, in a form to compare; `flaky`: map and reduce tasks of the RDD jobs
    fail on their first attempt (Spark runs them again)."""
    def fail_first_attempt(it):
        # Fails a third of the tasks on their first attempt, after reading their input (a
        # nested function: the workers cannot import this module).
        ctx = TaskContext.get()
        items = list(it)
        if ctx.attemptNumber() == 0 and ctx.partitionId() % 3 == 0:
            raise RuntimeError("injected failure")
        return iter(items)

    sc = spark.sparkContext
    nums = sc.parallelize(range(60_000), 6).map(lambda x: (x % 997, x))
    if flaky:
        nums = nums.mapPartitions(fail_first_attempt)
    out = {}
    reduced = nums.reduceByKey(operator.add, 5)
    if flaky:
        reduced = reduced.mapPartitions(fail_first_attempt)
    out["reduceByKey"] = sorted(reduced.collect())
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
    spark.range(0, 200_000, 1, 6).selectExpr(
        "id", "CASE WHEN id % 10 < 8 THEN 0 ELSE id % 101 END AS k",
        "cast(id % 1000 AS int) AS v").createOrReplaceTempView("s")
    skewed = spark.sql("SELECT d.name, count(*) c, sum(s.v) v FROM s JOIN d ON s.k = d.k "
                       "GROUP BY d.name ORDER BY d.name")
    out["sql_skew"] = [tuple(r) for r in skewed.collect()]
    out["plan:skew"] = skewed._jdf.queryExecution().executedPlan().toString()
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


@pytest.fixture(scope="module")
def crail_spark(cluster, jar):
    """A session on crail's shuffle; at its end the application's shuffles are gone."""
    spark = crail_session(cluster, jar)
    app = spark.sparkContext.applicationId
    try:
        yield spark
    finally:
        spark.stop()
    with crail.Client.connect(cluster, "spark-test-check", host=HOSTS[0]) as c:
        assert app not in c.list("/crail-shuffle")


def test_jobs_equal_sparks_own_shuffle(vanilla, crail_spark, cluster):
    app = crail_spark.sparkContext.applicationId
    got = jobs(crail_spark)
    # The shuffles went through crail: the application's are there until it ends.
    with crail.Client.connect(cluster, "spark-test-check", host=HOSTS[0]) as c:
        assert len(c.list(f"/crail-shuffle/{app}")) >= 10
    # AQE split the skewed partition: its reads took map ranges (crail's sizes told it to).
    assert "SortMergeJoin(skew=true)" in got["plan:skew"], got["plan:skew"]
    assert "coalesced and skewed" in got["plan:skew"]
    for name, want in vanilla.items():
        if not name.startswith("plan:"):
            assert got[name] == want, name


def test_unregistered_shuffles_leave_crail(crail_spark, cluster):
    sc = crail_spark.sparkContext
    sc.parallelize(range(1000), 2).map(lambda x: (x % 7, x)).reduceByKey(operator.add, 3) \
        .collect()
    app = sc.applicationId
    with crail.Client.connect(cluster, "spark-test-check", host=HOSTS[0]) as c:
        shuffles = [int(s) for s in c.list(f"/crail-shuffle/{app}") if s.isdigit()]
        newest = max(shuffles)
        # What Spark's ContextCleaner does once the shuffle's RDD is gone.
        sc._jsc.sc().cleaner().get().doCleanupShuffle(newest, True)
        assert str(newest) not in c.list(f"/crail-shuffle/{app}")


def test_failed_tasks_run_again_with_the_same_result(vanilla, crail_spark):
    got = jobs(crail_spark, flaky=True)
    for name, want in vanilla.items():
        if not name.startswith("plan:"):
            assert got[name] == want, name


def test_broadcast_is_read_by_every_executor(crail_spark):
    jvm = crail_spark.sparkContext._jvm
    value = os.urandom(3 << 20)
    bc = jvm.io.crail.spark.CrailBroadcast.create(crail_spark.sparkContext._jsc,
                                                  bytearray(value))
    rows = [r.split() for r in jvm.io.crail.spark.examples.BroadcastCheck.run(
        crail_spark.sparkContext._jsc, bc, 24)]
    digest = hashlib.sha256(value).hexdigest()
    assert {r[2] for r in rows} == {digest}
    executors = {r[0] for r in rows}
    assert len(executors) == 2, rows
    # Each executor's crail node fetched the value once, however many tasks read it.
    assert {(r[1], r[3]) for r in rows} == {(r[1], "1") for r in rows}
    bc.destroy()
