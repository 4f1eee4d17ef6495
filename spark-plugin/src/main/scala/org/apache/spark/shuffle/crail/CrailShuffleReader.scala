package org.apache.spark.shuffle.crail

import java.io.ByteArrayInputStream

import io.crail.spark.{CrailConf, CrailException, CrailNative}
import org.apache.spark.{InterruptibleIterator, SparkEnv, TaskContext}
import org.apache.spark.shuffle.{BaseShuffleHandle, FetchFailedException, ShuffleReader, ShuffleReadMetricsReporter}
import org.apache.spark.storage.{BlockManagerId, ShuffleBlockId}
import org.apache.spark.util.CompletionIterator
import org.apache.spark.util.collection.ExternalSorter

/**
 * A reduce task's input from crail: partitions [startPartition, endPartition) of maps
 * [startMap, endMap), then combined and sorted as the job asks, as Spark's own reader does.
 * Fixed-length records are sorted by crail when a crail sorter is set (and Spark then does
 * not sort them again unless it must combine them first).
 */
private[spark] class CrailShuffleReader[K, C](
    handle: BaseShuffleHandle[K, _, C],
    startMap: Int,
    endMap: Int,
    startPartition: Int,
    endPartition: Int,
    context: TaskContext,
    metrics: ShuffleReadMetricsReporter,
    settings: CrailConf,
    withEngine: (Long => Long) => Long) extends ShuffleReader[K, C] {

  private val dep = handle.dependency

  /** Runs a native call, turning lost output into Spark's FetchFailedException. */
  private def fetching[T](call: => T): T = {
    try call
    catch {
      case e: CrailException if e.isFetchFailure =>
        val map = e.lostMaps().headOption.getOrElse(startMap)
        throw new FetchFailedException(locationOf(map), handle.shuffleId, -1L, map,
          startPartition, e.getMessage, e)
    }
  }

  /** Where map `map`'s status says it wrote (null if unknown): Spark drops the statuses of
   * every map written there and runs them again. */
  private def locationOf(map: Int): BlockManagerId = {
    try {
      SparkEnv.get.mapOutputTracker
        .getMapSizesByExecutorId(handle.shuffleId, map, map + 1, 0,
          dep.partitioner.numPartitions)
        .collectFirst { case (location, _) => location }
        .orNull
    } catch {
      case e: Exception =>
        org.slf4j.LoggerFactory.getLogger(getClass).warn(
          s"crail: no location for map $map of shuffle ${handle.shuffleId}: $e")
        null
    }
  }

  /**
   * The maps to read and the attempt each must have been committed by, `[map, attempt, ...]`:
   * the map statuses Spark holds (maps with nothing in these partitions left out, as Spark's
   * own reader does). Reading exactly what Spark registered means a reader never mixes the
   * outputs of two runs of a stage; a missing status is Spark's MetadataFetchFailedException.
   */
  private def mapAttempts(): Array[Long] = {
    val attempts = scala.collection.mutable.LinkedHashMap[Int, Long]()
    SparkEnv.get.mapOutputTracker
      .getMapSizesByExecutorId(handle.shuffleId, startMap, endMap, startPartition, endPartition)
      .foreach { case (_, blocks) =>
        blocks.foreach {
          case (ShuffleBlockId(_, mapId, _), _, mapIndex) => attempts(mapIndex) = mapId
          case (other, _, _) => throw new IllegalStateException(
            s"crail: the map output tracker lists $other, not a shuffle block")
        }
      }
    attempts.iterator.flatMap { case (map, attempt) => Iterator(map.toLong, attempt) }.toArray
  }

  override def read(): Iterator[Product2[K, C]] = {
    val crailSorted = settings.fixed.isDefined && settings.crailSorter.isDefined
    val sorter = if (crailSorted) settings.crailSorter.get else null
    val attempts = mapAttempts()
    val reader = fetching(withEngine(CrailNative.openReader(_, handle.shuffleId, startPartition,
      endPartition, startMap, endMap, attempts, sorter, settings.prefetch)))
    var open = true
    def close(): Unit = if (open) { open = false; CrailNative.closeReader(reader) }
    context.addTaskCompletionListener[Unit](_ => close())

    val records: Iterator[Product2[Any, Any]] = settings.fixed match {
      case Some((k, v)) => fixedRecords(reader, k, v)
      case None => frames(reader)
    }
    val counted = records.map { r => metrics.incRecordsRead(1); r }
    val input = CompletionIterator[Product2[Any, Any], Iterator[Product2[Any, Any]]](
      counted, close())
    val interruptible = new InterruptibleIterator[Product2[Any, Any]](context, input)

    val aggregated: Iterator[Product2[K, C]] = dep.aggregator match {
      case Some(agg) if dep.mapSideCombine =>
        agg.combineCombinersByKey(interruptible.asInstanceOf[Iterator[Product2[K, C]]], context)
      case Some(agg) =>
        agg.asInstanceOf[org.apache.spark.Aggregator[K, Any, C]]
          .combineValuesByKey(interruptible.asInstanceOf[Iterator[Product2[K, Any]]], context)
      case None => interruptible.asInstanceOf[Iterator[Product2[K, C]]]
    }
    val result = dep.keyOrdering match {
      case Some(_) if crailSorted && dep.aggregator.isEmpty => aggregated
      case Some(ordering) =>
        val sorter = new ExternalSorter[K, C, C](context, ordering = Some(ordering),
          serializer = dep.serializer)
        sorter.insertAllAndUpdateMetrics(aggregated)
      case None => aggregated
    }
    result match {
      case i: InterruptibleIterator[Product2[K, C]] => i
      case other => new InterruptibleIterator[Product2[K, C]](context, other)
    }
  }

  /** Records of Spark-serialized frames, one frame (a serialization stream, compressed and
   * encrypted as the writer's Spark did) at a time. */
  private def frames(reader: Long): Iterator[Product2[Any, Any]] = {
    val ser = dep.serializer.newInstance()
    val blocks = SparkEnv.get.serializerManager
    val block = ShuffleBlockId(handle.shuffleId, 0L, startPartition)
    new Iterator[Iterator[Product2[Any, Any]]] {
      private var next0: Array[Byte] = fetching(CrailNative.nextValue(reader))
      override def hasNext: Boolean = next0 != null
      override def next(): Iterator[Product2[Any, Any]] = {
        val frame = next0
        metrics.incRemoteBytesRead(frame.length)
        metrics.incRemoteBlocksFetched(1)
        next0 = fetching(CrailNative.nextValue(reader))
        ser.deserializeStream(blocks.wrapStream(block, new ByteArrayInputStream(frame)))
          .asKeyValueIterator
          .asInstanceOf[Iterator[Product2[Any, Any]]]
      }
    }.flatten
  }

  /** (byte[K], byte[V]) records from batches of fixed-length ones. */
  private def fixedRecords(reader: Long, k: Int, v: Int): Iterator[Product2[Any, Any]] = {
    val record = k + v
    val batch = new Array[Byte](math.max(1, (4 << 20) / record) * record)
    new Iterator[Product2[Any, Any]] {
      private var filled = 0
      private var at = 0
      override def hasNext: Boolean = {
        if (at == filled) {
          filled = fetching(CrailNative.nextRecords(reader, batch))
          at = 0
          metrics.incRemoteBytesRead(filled)
        }
        at < filled
      }
      override def next(): Product2[Any, Any] = {
        if (!hasNext) throw new NoSuchElementException("no more records")
        val key = java.util.Arrays.copyOfRange(batch, at, at + k)
        val value = java.util.Arrays.copyOfRange(batch, at + k, at + record)
        at += record
        (key, value)
      }
    }
  }
}
