package org.apache.spark.shuffle.crail

import java.io.ByteArrayOutputStream

import io.crail.spark.{CrailConf, CrailEngine, CrailNative}
import org.apache.spark.{SparkEnv, TaskContext}
import org.apache.spark.scheduler.MapStatus
import org.apache.spark.serializer.SerializationStream
import org.apache.spark.shuffle.{BaseShuffleHandle, ShuffleWriteMetricsReporter, ShuffleWriter}
import org.apache.spark.shuffle.checksum.RowBasedChecksum
import org.apache.spark.storage.{BlockManagerId, ShuffleBlockId}

/** A buffer whose bytes can be handed on without a copy. */
private class Frame(size: Int) extends ByteArrayOutputStream(size) {
  def bytes: Array[Byte] = buf
}

/**
 * A map task's output to crail. With Spark's serializer, each partition's records are
 * serialized into frames of about `spark.crail.shuffle.bufferSize` bytes, each an independent
 * serialization stream, compressed and encrypted as Spark's own shuffle blocks are
 * (`spark.shuffle.compress`, `spark.io.compression.codec`, `spark.io.encryption.enabled`), sent
 * as one crail record; with `fixed:K:V`, (byte[K], byte[V]) records
 * are packed as they are. Map-side combining, if the job asks for it, happens first. Each
 * partition's open buffer counts against the task's execution memory ([[BufferMemory]]):
 * when Spark has none left, the fullest buffers go to crail early.
 */
private[spark] class CrailShuffleWriter[K, V, C](
    engine: Long,
    handle: BaseShuffleHandle[K, V, C],
    mapId: Long,
    context: TaskContext,
    metrics: ShuffleWriteMetricsReporter,
    settings: CrailConf) extends ShuffleWriter[K, V] {

  private val dep = handle.dependency
  private val partitioner = dep.partitioner
  // Spark's order-independent checksum of each partition's rows, where the shuffle asks for
  // one (SQL, spark.sql.shuffle.orderIndependentChecksum.enabled): Spark compares a map's
  // attempts with it to tell whether a rerun wrote other output. Kept with the commit.
  private val checksums = dep.rowBasedChecksums
  // The stage attempt is the output's generation: when Spark runs a stage again whole (an
  // indeterminate stage after a fetch failure), the new run's output replaces the old one.
  private var writer = CrailNative.openWriter(
    engine, handle.shuffleId, context.partitionId(), mapId, context.stageAttemptNumber())
  private var lengths: Array[Long] = Array.emptyLongArray
  private var status: MapStatus = null

  override def write(records: Iterator[Product2[K, V]]): Unit = {
    val input: Iterator[Product2[Any, Any]] =
      if (dep.mapSideCombine) {
        val agg = dep.aggregator.getOrElse(throw new IllegalStateException(
          "map-side combine without an aggregator"))
        agg.combineValuesByKey(records, context)
      } else {
        records.asInstanceOf[Iterator[Product2[Any, Any]]]
      }
    val start = System.nanoTime()
    settings.fixed match {
      case Some((k, v)) => writeFixed(input, k, v)
      case None => writeFrames(input)
    }
    // The output that stands for the map: this attempt's, or one committed first in this
    // stage attempt (whose attempt id the status then names, so readers check for it).
    val committed = CrailNative.commit(writer,
      RowBasedChecksum.getAggregatedChecksumValue(dep.rowBasedChecksums))
    writer = 0L
    lengths = java.util.Arrays.copyOfRange(committed, 2, committed.length)
    metrics.incBytesWritten(lengths.sum)
    metrics.incWriteTime(System.nanoTime() - start)
    status = MapStatus(CrailShuffleWriter.location(CrailEngine.host(engine)), lengths,
      committed(0), committed(1))
  }

  private def writeFrames(records: Iterator[Product2[Any, Any]]): Unit = {
    val ser = dep.serializer.newInstance()
    // Spark compresses and encrypts by the kind of block; every frame is a shuffle block's.
    val blocks = SparkEnv.get.serializerManager
    val block = ShuffleBlockId(handle.shuffleId, mapId, 0)
    val n = partitioner.numPartitions
    val frames = new Array[Frame](n)
    val streams = new Array[SerializationStream](n)
    def send(p: Int): Unit = {
      streams(p).close()
      CrailNative.writeRecord(writer, p, frames(p).bytes, 0, frames(p).size())
      frames(p) = null
      streams(p) = null
    }
    // A frame grows to bufferSize and a bit (the record that crosses it); a compressing
    // stream holds its block and the block compressed (lz4's 32 KiB each by default).
    val codec = if (SparkEnv.get.conf.getBoolean("spark.shuffle.compress", true)) 128L << 10
      else 0L
    val memory = new BufferMemory(context.taskMemoryManager(), n,
      settings.bufferSize + 4096L + codec, p => frames(p).size().toLong, send)
    var count = 0L
    try {
      while (records.hasNext) {
        val r = records.next()
        val p = partitioner.getPartition(r._1)
        if (checksums.nonEmpty) checksums(p).update(r._1, r._2)
        if (streams(p) == null) {
          memory.opening(p)
          frames(p) = new Frame(4096)
          streams(p) = ser.serializeStream(blocks.wrapStream(block, frames(p)))
        }
        streams(p).writeKey(r._1)
        streams(p).writeValue(r._2)
        count += 1
        if (frames(p).size() >= settings.bufferSize) {
          send(p)
          memory.closed(p)
        }
      }
      for (p <- 0 until n if streams(p) != null) {
        send(p)
        memory.closed(p)
      }
    } finally memory.done()
    metrics.incRecordsWritten(count)
  }

  private def writeFixed(records: Iterator[Product2[Any, Any]], k: Int, v: Int): Unit = {
    val record = k + v
    val n = partitioner.numPartitions
    val room = math.max(1, settings.bufferSize / record) * record
    val buffers = new Array[Array[Byte]](n)
    val filled = new Array[Int](n)
    def send(p: Int): Unit = {
      if (filled(p) > 0) CrailNative.write(writer, p, buffers(p), 0, filled(p))
      buffers(p) = null
      filled(p) = 0
    }
    val memory = new BufferMemory(context.taskMemoryManager(), n, room.toLong,
      p => filled(p).toLong, send)
    var count = 0L
    def bytes(x: Any, len: Int, what: String): Array[Byte] = x match {
      case b: Array[Byte] if b.length == len => b
      case b: Array[Byte] => throw new IllegalArgumentException(
        s"${CrailConf.Serializer}=${settings.serializer}: a $what of ${b.length} bytes, not $len")
      case other => throw new IllegalArgumentException(
        s"${CrailConf.Serializer}=${settings.serializer} takes (byte[], byte[]) records, " +
          s"not a $what of ${if (other == null) "null" else other.getClass.getName}")
    }
    try {
      while (records.hasNext) {
        val r = records.next()
        val key = bytes(r._1, k, "key")
        val value = bytes(r._2, v, "value")
        val p = partitioner.getPartition(key)
        if (checksums.nonEmpty) checksums(p).update(key, value)
        if (buffers(p) == null) {
          memory.opening(p)
          buffers(p) = new Array[Byte](room)
        }
        val at = filled(p)
        System.arraycopy(key, 0, buffers(p), at, k)
        System.arraycopy(value, 0, buffers(p), at + k, v)
        filled(p) = at + record
        count += 1
        if (filled(p) == room) {
          // Kept for the partition's next records: full buffers are sent, not given back.
          CrailNative.write(writer, p, buffers(p), 0, room)
          filled(p) = 0
        }
      }
      for (p <- 0 until n if buffers(p) != null) {
        send(p)
        memory.closed(p)
      }
    } finally memory.done()
    metrics.incRecordsWritten(count)
  }

  override def stop(success: Boolean): Option[MapStatus] = {
    if (writer != 0L) {
      CrailNative.abort(writer)
      writer = 0L
    }
    if (success) Option(status) else None
  }

  override def getPartitionLengths(): Array[Long] = lengths
}

private[spark] object CrailShuffleWriter {
  /**
   * A map status's location: the crail node the map wrote through, as an executor id no real
   * executor has (losing an executor loses no output), shared by every map written there (a
   * fetch failure naming it has Spark run all of them again at once: they lost their data
   * together when the node died).
   */
  def location(host: String): BlockManagerId = BlockManagerId(s"crail@$host", host, 1, None)
}
