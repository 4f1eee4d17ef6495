package org.apache.spark.shuffle.crail

import org.apache.spark.memory.{MemoryConsumer, MemoryMode, TaskMemoryManager}

/**
 * The memory of a map task's open partition buffers, taken from Spark's memory manager as
 * execution memory: each buffer a partition opens counts `perBuffer` bytes. When Spark has
 * none to give (the task's other consumers, or other tasks, hold it), the fullest buffers are
 * sent to crail early and their memory given back; Spark takes memory back the same way when
 * another consumer of the task needs it ([[spill]]). A task that can get no memory at all
 * still keeps one buffer open, uncounted, so it always moves on.
 *
 * `size(p)` is the bytes in partition `p`'s open buffer; `send(p)` sends and closes it.
 */
private[crail] final class BufferMemory(
    memory: TaskMemoryManager,
    partitions: Int,
    perBuffer: Long,
    size: Int => Long,
    send: Int => Unit)
  extends MemoryConsumer(memory, MemoryMode.ON_HEAP) {

  /** Per partition, the memory its open buffer counts (0 if closed, or uncounted). */
  private val held = new Array[Long](partitions)
  private val open = new java.util.BitSet(partitions)

  /** Buffers sent early to make room, for the task's metrics. */
  var sentEarly = 0L

  /** Counts partition `p`'s new buffer, sending others early if Spark has no memory for it. */
  def opening(p: Int): Unit = synchronized {
    var got = acquireMemory(perBuffer)
    if (got < perBuffer) {
      freeMemory(got)
      release(perBuffer)
      got = acquireMemory(perBuffer)
      if (got < perBuffer) {
        freeMemory(got)
        got = 0L
      }
    }
    held(p) = got
    open.set(p)
  }

  /** Partition `p`'s buffer was sent (full) and closed. */
  def closed(p: Int): Unit = synchronized {
    if (open.get(p)) {
      open.clear(p)
      freeMemory(held(p))
      held(p) = 0L
    }
  }

  /** Spark wants `size` bytes back: the fullest buffers go to crail now. */
  override def spill(size: Long, trigger: MemoryConsumer): Long = synchronized {
    release(size)
  }

  /** Gives every byte back (the task ends, committed or not); sends nothing. */
  def done(): Unit = synchronized {
    open.clear()
    java.util.Arrays.fill(held, 0L)
    freeMemory(getUsed)
  }

  /** Sends the fullest open buffers until `target` bytes (and at least a quarter of what is
   * held, so a task short of memory does not pay a scan per buffer) are given back. */
  private def release(target: Long): Long = {
    val goal = math.max(target, getUsed / 4)
    val fullest = Iterator.iterate(open.nextSetBit(0))(p => open.nextSetBit(p + 1))
      .takeWhile(_ >= 0).toArray.sortBy(p => -size(p))
    var freed = 0L
    val it = fullest.iterator
    while (freed < goal && it.hasNext) {
      val p = it.next()
      val counted = held(p)
      send(p)
      open.clear(p)
      held(p) = 0L
      freeMemory(counted)
      freed += counted
      sentEarly += 1
    }
    freed
  }
}
