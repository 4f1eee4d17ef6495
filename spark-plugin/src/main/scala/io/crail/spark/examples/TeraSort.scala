package io.crail.spark.examples

import java.io.{BufferedOutputStream, FileOutputStream}
import java.nio.file.{Files, Paths}

import org.apache.hadoop.fs.Path
import org.apache.spark.{Partitioner, SparkConf, SparkContext}

/**
 * TeraSort on Spark: sorts gensort-format input (100-byte records: a 10-byte key, a 90-byte
 * value) by key, unsigned byte order, into `part-r-NNNNN` files of a local output directory
 * (`terasort validate` checks them). Key ranges come from a sample the driver reads (see
 * `sample`); the sort is `repartitionAndSortWithinPartitions`, one shuffle. Run with spark-submit:
 *
 * {{{
 *   spark-submit --class io.crail.spark.examples.TeraSort crail-spark.jar IN_DIR OUT_DIR [PARTITIONS]
 * }}}
 *
 * With crail's shuffle, set `spark.crail.shuffle.serializer=fixed:10:90` and
 * `spark.crail.shuffle.sorter=radix`: records then cross the shuffle as their 100 bytes and
 * crail sorts each partition. Prints one line of JSON: records, seconds (from when the
 * executors are up to the last part written), shuffle_bytes (what the map tasks wrote, as
 * stored: compressed where the shuffle compresses).
 */
object TeraSort {
  val Key = 10
  val Record = 100

  /** Keys compare as unsigned bytes, as gensort and valsort order them. */
  object UnsignedBytes extends Ordering[Array[Byte]] {
    override def compare(a: Array[Byte], b: Array[Byte]): Int =
      java.util.Arrays.compareUnsigned(a, b)
  }

  /** Partition `p` holds the keys from split `p - 1` up to split `p` (unsigned order). */
  final class KeyRanges(splits: Array[Array[Byte]]) extends Partitioner {
    override def numPartitions: Int = splits.length + 1
    override def getPartition(key: Any): Int = {
      val k = key.asInstanceOf[Array[Byte]]
      var (lo, hi) = (0, splits.length)
      while (lo < hi) {
        val mid = (lo + hi) >>> 1
        if (UnsignedBytes.compare(splits(mid), k) <= 0) lo = mid + 1 else hi = mid
      }
      lo
    }
  }

  /**
   * Split keys for `partitions` ranges from keys read at evenly spaced records of every input
   * file (as Hadoop's TeraSort samples): the driver reads 1000 keys per partition, not the input.
   */
  def sample(sc: SparkContext, in: String, partitions: Int): KeyRanges = {
    val dir = new Path(in)
    // Positioned reads of a local file through the checksummed view cost a chunk each.
    val fs = dir.getFileSystem(sc.hadoopConfiguration) match {
      case checked: org.apache.hadoop.fs.ChecksumFileSystem => checked.getRawFileSystem
      case other => other
    }
    val files = fs.listStatus(dir).filter(f => f.isFile && !f.getPath.getName.startsWith("."))
    val total = files.map(_.getLen / Record).sum
    val wanted = math.min(total, 1000L * partitions)
    val keys = files.flatMap { f =>
      val records = f.getLen / Record
      val take = if (total == 0) 0L else (wanted * records + total - 1) / total
      val stream = fs.open(f.getPath)
      try {
        (0L until take).map { i =>
          val key = new Array[Byte](Key)
          stream.readFully(i * records / take * Record, key)
          key
        }
      } finally stream.close()
    }.sorted(UnsignedBytes)
    new KeyRanges((1 until partitions).flatMap(i =>
      keys.lift((i.toLong * keys.length / partitions).toInt)).toArray)
  }

  /** Waits (up to two minutes) for the executors the master promises, so the clock measures
   * the sort, not the executors' start. */
  def awaitExecutors(sc: SparkContext): Unit = {
    val cluster = """local-cluster\[(\d+),.*""".r
    val expected = sc.master match {
      case cluster(n) => n.toInt
      case _ => sc.getConf.getInt("spark.executor.instances", 0)
    }
    val deadline = System.nanoTime() + 120L * 1000 * 1000 * 1000
    while (sc.statusTracker.getExecutorInfos.length - 1 < expected &&
      System.nanoTime() < deadline) {
      Thread.sleep(100)
    }
  }

  /** Sorts `in` into `out` (a new local directory) in `partitions` parts (0: as many as input
   * splits); returns the records written. */
  def run(sc: SparkContext, in: String, out: String, partitions: Int): Long = {
    val records = sc.binaryRecords(in, Record)
      .map(r => (java.util.Arrays.copyOfRange(r, 0, Key),
        java.util.Arrays.copyOfRange(r, Key, Record)))
    val parts = if (partitions > 0) partitions else records.getNumPartitions
    implicit val ordering: Ordering[Array[Byte]] = UnsignedBytes
    val sorted = records.repartitionAndSortWithinPartitions(sample(sc, in, parts))
    Files.createDirectories(Paths.get(out))
    sorted.mapPartitionsWithIndex { (i, it) =>
      val file = Paths.get(out, f"part-r-$i%05d")
      val os = new BufferedOutputStream(new FileOutputStream(file.toFile), 1 << 20)
      var n = 0L
      try {
        it.foreach { case (k, v) => os.write(k); os.write(v); n += 1 }
      } finally os.close()
      Iterator(n)
    }.collect().sum
  }

  def main(args: Array[String]): Unit = {
    if (args.length < 2 || args.length > 3) {
      System.err.println("usage: TeraSort IN_DIR OUT_DIR [PARTITIONS]")
      sys.exit(2)
    }
    val (in, out) = (args(0), args(1))
    if (Files.exists(Paths.get(out))) {
      System.err.println(s"$out: the output directory exists; remove it or name another")
      sys.exit(2)
    }
    val sc = new SparkContext(new SparkConf().setAppName("TeraSort"))
    val shuffled = sc.longAccumulator("shuffle bytes")
    sc.addSparkListener(new org.apache.spark.scheduler.SparkListener {
      override def onTaskEnd(end: org.apache.spark.scheduler.SparkListenerTaskEnd): Unit =
        Option(end.taskMetrics).foreach(m => shuffled.add(m.shuffleWriteMetrics.bytesWritten))
    })
    try {
      awaitExecutors(sc)
      val start = System.nanoTime()
      val written = run(sc, in, out, if (args.length == 3) args(2).toInt else 0)
      val secs = (System.nanoTime() - start) / 1e9
      org.apache.spark.shuffle.crail.ShuffleChecks.awaitListeners(sc)
      println(f"""{"records": $written, "seconds": $secs%.3f, "shuffle_bytes": ${shuffled.value}}""")
    } finally sc.stop()
  }
}
