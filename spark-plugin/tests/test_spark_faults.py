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
from test_spark import crail_session  # noqa: E402


@pytest.fixture
def doomed_cluster(tmp_path):
    with crail_cluster(tmp_path, dram="256MiB", keep_going=True) as config:
        yield config


def run_through_a_lost_node(cluster: str, lose, jar: str) -> None:
    spark = crail_session(cluster, jar)
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


def test_an_indeterminate_stage_run_again_whole_replaces_its_output(cluster, jar):
    # A repartition of a shuffle's output is indeterminate: when a fetch of it fails, Spark
    # runs every map of it again under a new stage attempt (and the stages after it). Each
    # run's commits are a new generation of the shuffle: no AlreadyCommitted, and readers see
    # one run, never a mix.
    spark = crail_session(cluster, jar)
    try:
        n = 100_000
        lines = list(spark.sparkContext._jvm.org.apache.spark.shuffle.crail.ShuffleChecks.rerun(
            spark.sparkContext._jsc, n))
    finally:
        spark.stop()
    want = {}
    for x in range(n):
        want[x % 101 % 7] = want.get(x % 101 % 7, 0) + x
    assert lines[:-2] == [f"{k} {v}" for k, v in sorted(want.items())]
    # The output Spark reads in the end is the rerun's, of the repartition and of the stage
    # after it: each run replaced the last (had the rerun taken over the first run's output
    # instead, a stage after a lost map could mix runs).
    assert [line.split(" from ")[1] for line in lines[-2:]] == ["stage attempts 1"] * 2, lines


def test_map_statuses_carry_sparks_row_checksum(cluster, jar):
    # Spark 4.1+ compares the checksums of a map's attempts to tell whether a rerun wrote
    # other output (and with spark.sql.shuffle.orderIndependentChecksum.enableFullRetryOnMismatch,
    # on by default in 4.3, runs the stages after it again). The checksum is over the rows,
    # whatever their order; crail keeps it with the commit.
    spark = crail_session(cluster, jar, {"spark.sql.adaptive.enabled": "false"})
    try:
        checks = spark.sparkContext._jvm.org.apache.spark.shuffle.crail.ShuffleChecks

        def sums(order):
            df = spark.range(0, 200_000, 1, 4).selectExpr("id % 50 AS k", "id AS v")
            # The same rows in each map, in another order when `order` is descending.
            df = df.sortWithinPartitions(df.v.asc() if order == "asc" else df.v.desc())
            return sorted(df.groupBy("k").sum("v").collect())

        # Either key makes Spark ask for checksums.
        keys = ["spark.sql.shuffle.orderIndependentChecksum.enabled",
                "spark.sql.shuffle.orderIndependentChecksum.enableFullRetryOnMismatch"]
        for key in keys:
            spark.conf.set(key, "false")
        want = sums("asc")
        assert list(checks.checksums(0)) == [0] * 4
        for key in keys:
            spark.conf.set(key, "true")
        assert sums("asc") == want
        first = list(checks.checksums(1))
        assert len(first) == 4 and all(c not in (0, -1) for c in first), first
        assert len(set(first)) == 4, first
        # The same rows in another order: the same checksums.
        assert sums("desc") == want
        assert list(checks.checksums(2)) == first
    finally:
        spark.stop()
