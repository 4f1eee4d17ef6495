"""A crail node killed, or paused, while a Spark application runs on crail's shuffle: the node
serving the driver and one of the two executors, with its datanode holding their maps' output.
Reads of the lost output fail as FetchFailedException naming the node, Spark runs those maps
again (their engines move to a live node), and the results are what they were. A paused node
answers nothing: its services are taken for lost within the client's deadline, so the engines
move on instead of waiting for it."""

import operator
import signal

import pytest

pyspark = pytest.importorskip("pyspark")
from crail_cluster import HOSTS, crail_cluster, kill_node, signal_node  # noqa: E402
from test_spark import CRAIL_SPARK, session  # noqa: E402


@pytest.fixture
def doomed_cluster(tmp_path):
    with crail_cluster(tmp_path, dram="256MiB", keep_going=True) as config:
        yield config


def run_through_a_lost_node(cluster: str, lose, jar: str) -> None:
    spark = session({
        **CRAIL_SPARK,
        "spark.jars": jar,
        "spark.executor.extraClassPath": jar,
        "spark.crail.config": cluster,
    })
    try:
        sc = spark.sparkContext
        sums = sc.parallelize(range(200_000), 8).map(lambda x: (x % 997, x)) \
            .reduceByKey(operator.add, 6)
        want = sorted(sums.collect())
        # Executor ids "0" and "1" and the driver pick nodes .2, .3 and .3 (by the hash of
        # their ids): .3 holds the output of half the maps and serves the driver.
        lose()
        # The same shuffle read again: its lost maps run again.
        assert sorted(sums.collect()) == want
        # A new shuffle after the loss (registered by the driver through another node).
        counts = sc.parallelize(range(50_000), 4).map(lambda x: (x % 13, 1)) \
            .reduceByKey(operator.add, 3).collect()
        assert sorted(counts) == [(k, len(range(k, 50_000, 13))) for k in range(13)]
    finally:
        spark.stop()


def test_a_killed_node_loses_no_results(doomed_cluster, jar):
    run_through_a_lost_node(doomed_cluster, lambda: kill_node(doomed_cluster, HOSTS[1]), jar)


def test_a_paused_node_is_lost_within_the_deadline_and_loses_no_results(
        tmp_path, monkeypatch, jar):
    # The namenode declares a silent datanode dead within about a second; the engines (in the
    # Spark JVMs, which inherit these variables) give a silent service 3 s and a datanode 5 s.
    for key, value in {"CRAIL_NAMENODE_HEARTBEAT_INTERVAL": "200ms",
                       "CRAIL_NAMENODE_HEARTBEAT_MISSES": "5",
                       "CRAIL_CLIENT_RPC_TIMEOUT": "3s",
                       "CRAIL_CLIENT_DATA_TIMEOUT": "5s"}.items():
        monkeypatch.setenv(key, value)
    with crail_cluster(tmp_path, dram="256MiB", keep_going=True) as config:
        try:
            run_through_a_lost_node(
                config, lambda: signal_node(config, HOSTS[1], signal.SIGSTOP), jar)
        finally:
            signal_node(config, HOSTS[1], signal.SIGCONT)
