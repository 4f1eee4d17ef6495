package io.crail.spark

import java.nio.ByteBuffer
import java.util.UUID
import java.util.concurrent.ConcurrentHashMap

import scala.reflect.ClassTag

import org.apache.spark.{SparkContext, SparkEnv}
import org.apache.spark.api.java.JavaSparkContext

/**
 * A large value broadcast through crail's broadcast service, for jobs to use instead of
 * `sc.broadcast` where the value is big (Spark's broadcast factory is not pluggable): the value
 * is written once, striped over crail's nodes; each crail node fetches it once, however many
 * executors read it there; each executor JVM keeps what it read. Send the handle to tasks
 * (it is small and serializable) and call `value` there; `destroy()` frees it everywhere.
 *
 * {{{
 *   val model = CrailBroadcast(sc, weights)           // Scala
 *   rdd.map(x => score(model.value, x))
 *   model.destroy()
 *   CrailBroadcast<double[]> m = CrailBroadcast.create(jsc, weights);   // Java
 * }}}
 *
 * The value is serialized with the job's Spark serializer. Variables the application leaves
 * are removed when it stops if the shuffle manager is crail's; destroy them otherwise.
 */
final class CrailBroadcast[T] private (val id: String, val bytes: Long) extends Serializable {

  /** The value (read from this JVM's crail node the first time, then kept). */
  def value: T = CrailBroadcast.read(id).asInstanceOf[T]

  /** Frees the value on every node; later reads of it fail (JVMs that read it keep theirs). */
  def destroy(): Unit = {
    CrailEngine.call(CrailNative.destroyBroadcast(_, id))
    CrailBroadcast.values.remove(id)
  }

  /** How many times this JVM's crail node fetched the value from the store. */
  def nodeFetches: Long = CrailEngine.call(CrailNative.broadcastFetches(_, id))

  /** The crail node this JVM reads from. */
  def node: String = CrailEngine.call(CrailEngine.host(_))

  override def toString: String = s"CrailBroadcast($id, $bytes bytes)"
}

object CrailBroadcast {
  private val values = new ConcurrentHashMap[String, AnyRef]()

  /** Broadcasts `value` through crail. */
  def apply[T: ClassTag](sc: SparkContext, value: T): CrailBroadcast[T] = {
    val conf = sc.getConf
    val buffer = SparkEnv.get.serializer.newInstance().serialize(value)
    val data = new Array[Byte](buffer.remaining())
    buffer.get(data)
    val id = s"spark-${UUID.randomUUID()}"
    val size = CrailEngine.call(conf, CrailEngine.appOf(conf))(CrailNative.putBroadcast(_, id, data))
    new CrailBroadcast[T](id, size)
  }

  /** Java's way to [[apply]]. */
  def create[T](jsc: JavaSparkContext, value: T): CrailBroadcast[T] =
    apply(jsc.sc, value)(ClassTag.AnyRef.asInstanceOf[ClassTag[T]])

  private def read(id: String): AnyRef = values.computeIfAbsent(id, { (id: String) =>
    val data = CrailEngine.call(CrailNative.getBroadcast(_, id))
    SparkEnv.get.serializer.newInstance().deserialize[AnyRef](ByteBuffer.wrap(data))
  })
}
