"""The plugin's settings: TeraSort-style records with the fixed-length serializer and crail's
radix sort (output checked by `terasort validate`), and bad settings or an unreachable cluster
failing the application at start with one line naming the cause."""

import operator
import os
import re
import subprocess
from pathlib import Path

import pytest

pyspark = pytest.importorskip("pyspark")
import crail  # noqa: E402
from conftest import HOSTS  # noqa: E402
from py4j.protocol import Py4JJavaError  # noqa: E402
from test_spark import CRAIL_SPARK, crail_session, session  # noqa: E402

TERASORT = os.environ.get(
    "TERASORT_BIN", str(Path(__file__).parents[2] / "target" / "debug" / "terasort"))



def test_terasort_records_sorted_by_crail(cluster, jar, tmp_path):
    subprocess.run([TERASORT, "gen", "--size", "20MiB", "--out", str(tmp_path / "in"),
                    "--parts", "4"], check=True, stdout=subprocess.DEVNULL)
    spark = crail_session(cluster, jar, {
        "spark.crail.shuffle.serializer": "fixed:10:90",
        "spark.crail.shuffle.sorter": "radix",
    })
    try:
        jvm = spark.sparkContext._jvm
        written = jvm.io.crail.spark.examples.TeraSort.run(
            spark.sparkContext._jsc.sc(), str(tmp_path / "in"), str(tmp_path / "out"), 5)
    finally:
        spark.stop()
    assert written == (20 << 20) // 100
    assert len(list((tmp_path / "out").iterdir())) == 5
    # Sorted, in order across parts, every record there (valsort's checks and checksum).
    done = subprocess.run([TERASORT, "validate", str(tmp_path / "out")], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    gen_sum = subprocess.run([TERASORT, "validate", str(tmp_path / "in")], capture_output=True,
                             text=True).stdout
    checksum = next(line for line in done.stdout.splitlines() if "checksum" in line.lower())
    assert checksum in gen_sum


@pytest.mark.parametrize("key,value,words", [
    ("spark.crail.shuffle.sorter", "bogus", "expected one of comparison, radix"),
    ("spark.crail.shuffle.sorter", "radix", "fixed-length records only"),
    ("spark.crail.shuffle.serializer", "fixed:10", "expected spark or fixed:KEY:VALUE"),
    ("spark.crail.shuffle.bufferSize", "12q", "expected a size"),
    ("spark.crail.host", "not-an-address", "expected an IP address"),
    ("spark.crail.shuffle.replication", "4", "expected a number from 1 to 3"),
    ("spark.crail.shuffle.prefetch", "none", "expected a number from 1 to 64"),
])
def test_bad_settings_fail_at_start(cluster, jar, key, value, words):
    with pytest.raises(Py4JJavaError) as err:
        crail_session(cluster, jar, {key: value})
    assert f"{key}={value}" in str(err.value) and words in str(err.value)


def test_store_settings_as_spark_keys_need_no_file(cluster, jar):
    namenode = re.search(r'namenode = "([^"]+)"', Path(cluster).read_text()).group(1)
    spark = session({
        **CRAIL_SPARK,
        "spark.jars": jar,
        "spark.executor.extraClassPath": jar,
        "spark.crail.namenode": namenode,
        "spark.crail.client.rpc_timeout": "20s",
    })
    try:
        counts = spark.sparkContext.parallelize(range(30_000), 3).map(lambda x: (x % 7, 1)) \
            .reduceByKey(lambda a, b: a + b, 2).collect()
    finally:
        spark.stop()
    assert sorted(counts) == [(k, len(range(k, 30_000, 7))) for k in range(7)]


@pytest.mark.parametrize("key,value,words", [
    ("spark.crail.client.rpc_timeout", "soon", "spark.crail.client.rpc_timeout=soon"),
    ("spark.crail.client.bogus", "1", "not a configuration key"),
    ("spark.crail.secret", "tiny1", "spark.crail.secret=<redacted>"),
])
def test_bad_store_settings_fail_at_start_naming_the_key(cluster, jar, key, value, words):
    with pytest.raises(Py4JJavaError) as err:
        crail_session(cluster, jar, {key: value})
    assert key in str(err.value) and words in str(err.value)


def test_an_unreachable_cluster_fails_at_start(jar, tmp_path):
    config = tmp_path / "nowhere.toml"
    config.write_text('[client]\nnamenode = "127.0.0.99:9060"\n')
    with pytest.raises(Py4JJavaError) as err:
        crail_session(str(config), jar)
    text = str(err.value)
    assert "crail: cannot connect" in text and f"spark.crail.config={config}" in text
    assert "127.0.0.99" in text


def test_frames_are_compressed_and_encrypted_as_sparks_own_blocks(cluster, jar):
    # Spark's settings for its shuffle blocks apply to crail's frames: the same results, and
    # the bytes in crail (the map statuses' sizes) shrink with every codec.
    def run(settings):
        spark = crail_session(cluster, jar, settings)
        try:
            sc = spark.sparkContext
            words = sc.parallelize(range(200_000), 4) \
                .map(lambda x: (x % 101, f"record {x % 1000} of a rather repetitive text"))
            got = sorted(words.groupByKey(4).mapValues(lambda v: sorted(v)[:3]).collect())
            return got, sc._jvm.org.apache.spark.shuffle.crail.ShuffleChecks.shuffleBytes(0, 4)
        finally:
            spark.stop()

    want, raw = run({"spark.shuffle.compress": "false"})
    for settings in [{},  # Spark's default: lz4
                     {"spark.io.compression.codec": "zstd"},
                     {"spark.io.compression.codec": "snappy"},
                     {"spark.io.encryption.enabled": "true"}]:
        got, stored = run(settings)
        assert got == want, settings
        if "spark.io.encryption.enabled" not in settings:
            assert stored * 3 < raw, (settings, stored, raw)
    # Fixed-length records are stored as their bytes for crail to sort: no encryption.
    with pytest.raises(Py4JJavaError) as err:
        crail_session(cluster, jar, {"spark.crail.shuffle.serializer": "fixed:10:90",
                                     "spark.io.encryption.enabled": "true"})
    assert "cannot be encrypted" in str(err.value)


def test_shuffles_fall_back_to_sparks_own_when_crail_cannot_be_reached(jar):
    # Nothing listens at this namenode address: with spark.crail.fallback the application
    # starts anyway and every shuffle goes through Spark's sort shuffle, one warning each
    # (in the driver's log, which the JVM writes where pytest cannot capture it).
    spark = session({
        **CRAIL_SPARK,
        "spark.jars": jar,
        "spark.executor.extraClassPath": jar,
        "spark.crail.namenode": "127.0.0.1:9",
        "spark.crail.fallback": "true",
    })
    try:
        sc = spark.sparkContext
        sums = sc.parallelize(range(50_000), 4).map(lambda x: (x % 13, x)) \
            .reduceByKey(operator.add, 3).collect()
        assert sorted(sums) == [(k, sum(range(k, 50_000, 13))) for k in range(13)]
        counts = spark.range(0, 10_000, 1, 3).selectExpr("id % 7 AS k").groupBy("k").count()
        assert sorted(tuple(r) for r in counts.collect()) == \
            [(k, len(range(k, 10_000, 7))) for k in range(7)]
    finally:
        spark.stop()



def test_replicated_shuffles_and_prefetch_as_spark_keys(cluster, jar):
    spark = crail_session(cluster, jar, {"spark.crail.shuffle.replication": "2",
                                         "spark.crail.shuffle.prefetch": "1"})
    try:
        sc = spark.sparkContext
        sums = sc.parallelize(range(50_000), 4).map(lambda x: (x % 13, x)) \
            .reduceByKey(operator.add, 3).collect()
        assert sorted(sums) == [(k, sum(range(k, 50_000, 13))) for k in range(13)]
        # Every group file has its second copy beside it.
        with crail.Client.connect(cluster, "spark-test-check", host=HOSTS[0]) as c:
            files = c.list(f"/crail-shuffle/{sc.applicationId}/0/g")
        copies = [f for f in files if f.endswith(".r1")]
        assert copies and len(copies) * 2 == len(files), files
    finally:
        spark.stop()
