"""A crail cluster for the session, and the plugin's jar (CRAIL_SPARK_JAR, else the one
`mvn package` left in spark-plugin/target)."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "sdk-python" / "tests"))
from crail_cluster import HOSTS, crail_cluster  # noqa: E402,F401

JAR = os.environ.get(
    "CRAIL_SPARK_JAR", str(Path(__file__).parents[1] / "target" / "crail-spark-0.1.0.jar")
)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    with crail_cluster(tmp_path_factory.mktemp("cluster"), dram="512MiB") as config:
        yield config


@pytest.fixture(scope="session", autouse=True)
def jar():
    """The plugin jar, on the class path of the driver JVM pyspark launches (one per test
    process: a session's spark.driver.extraClassPath cannot reach a JVM already running)."""
    if not Path(JAR).exists():
        pytest.fail(f"no plugin jar at {JAR}: run mvn package in spark-plugin")
    os.environ["PYSPARK_SUBMIT_ARGS"] = f"--driver-class-path {JAR} pyspark-shell"
    return JAR
