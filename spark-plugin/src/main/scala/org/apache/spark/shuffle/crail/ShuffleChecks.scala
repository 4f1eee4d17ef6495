package org.apache.spark.shuffle.crail

import scala.collection.concurrent.TrieMap

import org.apache.spark.{MapOutputTrackerMaster, ShuffleDependency, SparkEnv, TaskContext}
import org.apache.spark.api.java.JavaSparkContext
import org.apache.spark.rdd.RDD
import org.apache.spark.scheduler.{SparkListener, SparkListenerTaskEnd}
import org.apache.spark.shuffle.FetchFailedException
import org.apache.spark.storage.{BlockManagerId, ShuffleBlockId}

/**
 * Checks of a shuffle manager against Spark's scheduler, for a deployment and the tests (in
 * Spark's package, whose fetch failures and map statuses they use).
 */
object ShuffleChecks {
  /**
   * A stage Spark must run again whole: a round-robin `repartition` of a shuffle's output (whose
   * order varies from run to run, so the repartitioned output is indeterminate), read by a stage
   * whose first task fails once with a fetch failure. Spark then runs every map of the
   * repartition again under a new stage attempt, and the stage after it too.
   *
   * Returns the final result as `key sum` lines, then per shuffle after the repartition's input
   * `shuffle S from stage attempts A,B`: the stage attempts of the tasks whose output the map
   * statuses Spark holds name (all from the rerun when each run's output replaced the last).
   */
  def rerun(jsc: JavaSparkContext, n: Int): Array[String] = {
    val sc = jsc.sc
    // The stage attempt of every task, by task id (a map status names its task).
    val attemptOf = TrieMap[Long, Int]()
    sc.addSparkListener(new SparkListener {
      override def onTaskEnd(end: SparkListenerTaskEnd): Unit =
        attemptOf(end.taskInfo.taskId) = end.stageAttemptId
    })
    val sums = sc.parallelize(0 until n, 4).map(x => (x % 101, x.toLong)).reduceByKey(_ + _, 5)
    val spread = sums.repartition(6)
    val shuffle = firstShuffle(spread).shuffleId
    val checked = spread.mapPartitions { it =>
      val task = TaskContext.get()
      if (task.partitionId() == 0 && task.stageAttemptNumber() == 0 && task.attemptNumber() == 0) {
        throw new FetchFailedException(
          BlockManagerId("crail@injected", "127.0.0.1", 1), shuffle, -1L, 0, 0,
          "injected: the repartition's output is gone")
      }
      it
    }
    val summed = checked.map { case (k, v) => (k % 7, v) }.reduceByKey(_ + _, 3)
    val result = summed.collect().sortBy(_._1)
    awaitListeners(sc)
    val runs = Seq(firstShuffle(spread), firstShuffle(summed)).map { dep =>
      val s = dep.shuffleId
      val attempts = SparkEnv.get.mapOutputTracker
        .getMapSizesByExecutorId(s, 0, Int.MaxValue, 0, dep.partitioner.numPartitions)
        .flatMap(_._2)
        .map { case (ShuffleBlockId(_, mapId, _), _, _) => attemptOf.getOrElse(mapId, -1)
          case (other, _, _) => throw new IllegalStateException(s"not a shuffle block: $other")
        }
        .toSeq.distinct.sorted
      s"shuffle $s from stage attempts ${attempts.mkString(",")}"
    }
    result.map { case (k, v) => s"$k $v" } ++ runs
  }

  /**
   * The checksum each map status of shuffle `shuffle` carries, by map (on the driver, after
   * the shuffle's maps ran).
   */
  def checksums(shuffle: Int): Array[Long] = {
    val tracker = SparkEnv.get.mapOutputTracker.asInstanceOf[MapOutputTrackerMaster]
    tracker.shuffleStatuses(shuffle).mapStatuses.map(s => if (s == null) -1L else s.checksumValue)
  }

  /** Waits until Spark's listeners have seen every event so far (task ends with metrics). */
  def awaitListeners(sc: org.apache.spark.SparkContext): Unit = sc.listenerBus.waitUntilEmpty()

  /** The bytes the map statuses of shuffle `shuffle` (of `partitions` partitions) say its maps
   * wrote (on the driver; each size as Spark keeps it, within about 10%). */
  def shuffleBytes(shuffle: Int, partitions: Int): Long = {
    val tracker = SparkEnv.get.mapOutputTracker.asInstanceOf[MapOutputTrackerMaster]
    val statuses = tracker.shuffleStatuses(shuffle).mapStatuses.filter(_ != null)
    statuses.map(s => (0 until partitions).map(p => s.getSizeForBlock(p)).sum).sum
  }

  /** The shuffle nearest `rdd` in its lineage. */
  private def firstShuffle(rdd: RDD[_]): ShuffleDependency[_, _, _] =
    rdd.dependencies.collectFirst { case dep: ShuffleDependency[_, _, _] => dep }.getOrElse(firstShuffle(rdd.dependencies.head.rdd))
}
