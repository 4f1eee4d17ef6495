package io.crail.spark.examples

import java.security.MessageDigest

import io.crail.spark.CrailBroadcast
import org.apache.spark.SparkEnv
import org.apache.spark.api.java.JavaSparkContext

/**
 * Reads a [[CrailBroadcast]] of bytes in `tasks` tasks and reports, per task, what its executor
 * saw: `executorId node sha256 nodeFetches`. For checking a deployment (and the tests).
 */
object BroadcastCheck {
  def run(jsc: JavaSparkContext, bc: CrailBroadcast[Array[Byte]], tasks: Int): Array[String] =
    jsc.sc.parallelize(0 until tasks, tasks).map { _ =>
      Thread.sleep(50) // so every executor gets some of the tasks
      val digest = MessageDigest.getInstance("SHA-256").digest(bc.value)
        .map(b => f"${b & 0xff}%02x").mkString
      s"${SparkEnv.get.executorId} ${bc.node} $digest ${bc.nodeFetches}"
    }.collect()
}
