"""Dynamic allocation on crail's shuffle: crail holds the output, so executors are released
between stages with no external shuffle service and no shuffle tracking (the ShuffleDataIO
plugin tells Spark the storage is reliable), and the next stage's new executors read it."""

import operator
import time

import pytest

pyspark = pytest.importorskip("pyspark")
import crail  # noqa: E402
from conftest import HOSTS  # noqa: E402
from test_spark import crail_session, session  # noqa: E402

DYNAMIC = {
    "spark.shuffle.sort.io.plugin.class": "io.crail.spark.CrailShuffleDataIO",
    "spark.dynamicAllocation.enabled": "true",
    "spark.dynamicAllocation.shuffleTracking.enabled": "false",
    "spark.shuffle.service.enabled": "false",
    "spark.dynamicAllocation.minExecutors": "0",
    "spark.dynamicAllocation.initialExecutors": "2",
    "spark.dynamicAllocation.maxExecutors": "2",
    "spark.dynamicAllocation.executorIdleTimeout": "1s",
    "spark.dynamicAllocation.schedulerBacklogTimeout": "1s",
}


def executors(sc):
    """The executors the driver has now."""
    ids = sc._jsc.sc().getExecutorIds()
    return [ids.apply(i) for i in range(ids.size())]


def wait_for(what, timeout=90):
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


def test_executors_released_between_stages_lose_no_shuffle_output(cluster, jar):
    spark = crail_session(cluster, jar, DYNAMIC)
    try:
        sc = spark.sparkContext
        app = sc.applicationId
        sums = sc.parallelize(range(200_000), 8).map(lambda x: (x % 997, x)) \
            .reduceByKey(operator.add, 6)
        want = {}
        for x in range(200_000):
            want[x % 997] = want.get(x % 997, 0) + x
        assert dict(sums.collect()) == want
        first = set(executors(sc))
        assert first, "no executor ran the first job"
        # Idle executors go (they hold no shuffle output: crail does).
        wait_for(lambda: not executors(sc))
        # The same shuffle read again, by new executors.
        assert dict(sums.collect()) == want
        assert set(executors(sc)).isdisjoint(first), executors(sc)
        # A shuffle Spark's cleaner drops leaves crail through the driver components.
        with crail.Client.connect(cluster, "spark-test-check", host=HOSTS[0]) as c:
            shuffles = [int(s) for s in c.list(f"/crail-shuffle/{app}") if s.isdigit()]
            newest = max(shuffles)
            sc._jsc.sc().cleaner().get().doCleanupShuffle(newest, True)
            assert str(newest) not in c.list(f"/crail-shuffle/{app}")
    finally:
        spark.stop()
    # And the application's end, too.
    with crail.Client.connect(cluster, "spark-test-check", host=HOSTS[0]) as c:
        assert app not in c.list("/crail-shuffle")


def test_the_plugin_without_crails_shuffle_manager_fails_at_start(jar):
    with pytest.raises(Exception, match="needs spark.shuffle.manager=io.crail.spark"):
        session({
            **DYNAMIC,
            "spark.jars": jar,
            "spark.executor.extraClassPath": jar,
        })
