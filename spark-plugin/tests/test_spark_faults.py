"""A crail node killed while a Spark application runs on crail's shuffle: the node serving the
driver and one of the two executors, with its datanode holding their maps' output. Reads of
the lost output fail as FetchFailedException naming the node, Spark runs those maps again
(their engines move to a live node), and the results are what they were."""

import operator

import pytest

pyspark = pytest.importorskip("pyspark")
from crail_cluster import HOSTS, crail_cluster, kill_node  # noqa: E402
from test_spark import CRAIL_SPARK, session  # noqa: E402


@pytest.fixture
def doomed_cluster(tmp_path):
    with crail_cluster(tmp_path, dram="256MiB", keep_going=True) as config:
        yield config


def test_a_killed_node_loses_no_results(doomed_cluster, jar):
    spark = session({
        **CRAIL_SPARK,
        "spark.jars": jar,
        "spark.executor.extraClassPath": jar,
        "spark.crail.config": doomed_cluster,
    })
    try:
        sc = spark.sparkContext
        sums = sc.parallelize(range(200_000), 8).map(lambda x: (x % 997, x)) \
            .reduceByKey(operator.add, 6)
        want = sorted(sums.collect())
        # Executor ids "0" and "1" and the driver pick nodes .2, .3 and .3 (by the hash of
        # their ids): .3 holds the output of half the maps and serves the driver.
        kill_node(doomed_cluster, HOSTS[1])
        # The same shuffle read again: its lost maps run again.
        assert sorted(sums.collect()) == want
        # A new shuffle after the loss (registered by the driver through another node).
        counts = sc.parallelize(range(50_000), 4).map(lambda x: (x % 13, 1)) \
            .reduceByKey(operator.add, 3).collect()
        assert sorted(counts) == [(k, len(range(k, 50_000, 13))) for k in range(13)]
    finally:
        spark.stop()
