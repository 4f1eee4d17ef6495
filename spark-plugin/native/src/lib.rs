//! The JNI bridge of the Spark plugin: the static native methods of
//! `io.crail.spark.CrailNative`, over `crail_sdk`.
//!
//! Every entry point runs its work inside [`guard`]: an error becomes an
//! `io.crail.spark.CrailException` (its kind, the layer's one-line message, and for lost map
//! output the maps to run again), a panic becomes one of kind `Internal`; nothing unwinds into
//! the JVM. Engines, map writers and readers are held in tables here and named to Java by
//! numbers, so a stale or made-up handle is an error, never a dangling pointer. Calls block
//! the calling Java thread on one shared Tokio runtime.
//!
//! The JNI entry points need unmangled names, which Rust 2024 marks `unsafe(no_mangle)`; the
//! crate has no other unsafe code.
#![allow(unsafe_code)]

mod config;
mod handles;

use std::panic::AssertUnwindSafe;
use std::sync::Mutex;

use crail_sdk::{Crail, ErrorKind, MapOutput, Records, Shuffle, crail_broadcast, crail_shuffle};
use jni::JNIEnv;
use jni::objects::{JByteArray, JClass, JLongArray, JObject, JString, JThrowable, JValue};
use jni::sys::{jboolean, jbyteArray, jint, jlong, jlongArray};

use config::address;
pub use config::{connect, load_config};
use handles::Table;

/// The client configuration file read when Spark names none and `CRAIL_CONF` is unset, if it
/// exists (else the built-in defaults and `CRAIL_CLIENT_*` variables).
pub const DEFAULT_CONFIG: &str = "/etc/crail/client.toml";

/// A failure on its way to Java.
#[derive(Debug)]
pub struct Failure {
    /// `NotFound`, `AlreadyExists`, `StoreFull`, `FetchFailed`, `InvalidArgument`,
    /// `ServiceError` (the store), `NodeLost` (the engine's node: its shuffle or broadcast
    /// service), `Closed` or `Internal`.
    pub kind: &'static str,
    /// One line.
    pub message: String,
    /// For `FetchFailed`: the maps whose output was lost.
    pub maps: Vec<u32>,
}

impl Failure {
    fn new(kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            maps: Vec::new(),
        }
    }
}

impl From<crail_sdk::Error> for Failure {
    fn from(e: crail_sdk::Error) -> Self {
        let kind = match e.kind() {
            ErrorKind::NotFound => "NotFound",
            ErrorKind::AlreadyExists => "AlreadyExists",
            ErrorKind::StoreFull => "StoreFull",
            ErrorKind::FetchFailed => "FetchFailed",
            ErrorKind::InvalidArgument => "InvalidArgument",
            ErrorKind::Unreachable => "ServiceError",
            ErrorKind::NodeLost => "NodeLost",
            ErrorKind::Other => "Internal",
        };
        Self {
            kind,
            maps: e.lost_maps().to_vec(),
            message: e.to_string(),
        }
    }
}

impl From<jni::errors::Error> for Failure {
    fn from(e: jni::errors::Error) -> Self {
        Failure::new("Internal", format!("JNI: {e}"))
    }
}

type Result<T> = std::result::Result<T, Failure>;

/// Runs `work`, turning its failure or panic into a pending Java exception (and `fallback`).
fn guard<'l, T>(
    env: &mut JNIEnv<'l>,
    fallback: T,
    work: impl FnOnce(&mut JNIEnv<'l>) -> Result<T>,
) -> T {
    let failure = match std::panic::catch_unwind(AssertUnwindSafe(|| work(env))) {
        Ok(Ok(value)) => return value,
        Ok(Err(failure)) => failure,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            Failure::new(
                "Internal",
                format!("internal error in crail's native code: {what}"),
            )
        }
    };
    // An exception already pending (from a JNI call) is the one Java sees.
    if !env.exception_check().unwrap_or(true) {
        let _ = throw(env, &failure);
    }
    fallback
}

fn throw(env: &mut JNIEnv<'_>, failure: &Failure) -> jni::errors::Result<()> {
    let kind = env.new_string(failure.kind)?;
    let message = env.new_string(&failure.message)?;
    let maps: Vec<i32> = failure.maps.iter().map(|m| *m as i32).collect();
    let array = env.new_int_array(maps.len() as i32)?;
    env.set_int_array_region(&array, 0, &maps)?;
    let exception = env.new_object(
        "io/crail/spark/CrailException",
        "(Ljava/lang/String;Ljava/lang/String;[I)V",
        &[
            JValue::Object(&kind),
            JValue::Object(&message),
            JValue::Object(&array),
        ],
    )?;
    env.throw(JThrowable::from(exception))
}

/// The runtime every call blocks on.
fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    crail_sdk::shared_runtime().map_err(|e| Failure::new("Internal", e))
}

fn block<T>(work: impl Future<Output = T>) -> Result<T> {
    Ok(runtime()?.block_on(work))
}

fn string(env: &mut JNIEnv<'_>, s: &JString<'_>) -> Result<Option<String>> {
    if s.is_null() {
        return Ok(None);
    }
    Ok(Some(env.get_string(s)?.into()))
}

fn required(env: &mut JNIEnv<'_>, s: &JString<'_>, what: &str) -> Result<String> {
    string(env, s)?.ok_or_else(|| Failure::new("InvalidArgument", format!("{what} is null")))
}

fn unsigned(value: jint, what: &str) -> Result<u32> {
    u32::try_from(value)
        .map_err(|_| Failure::new("InvalidArgument", format!("{what} {value} is negative")))
}

static ENGINES: Table<Crail> = Table::new("engine");
static WRITERS: Table<Mutex<Option<Writing>>> = Table::new("map writer");

/// A map task's output and its shuffle (to look up the winner when another attempt
/// committed first).
#[derive(Debug)]
struct Writing {
    shuffle: Shuffle,
    out: MapOutput,
}
static READERS: Table<Mutex<Reader>> = Table::new("reader");

/// `connect(config, settings, app, host, ownAddress, seed, avoid)`: an engine handle
/// (`settings`: store keys as Spark keys, one a line, or null; `avoid`: hosts separated by
/// commas, or null).
#[unsafe(no_mangle)]
pub extern "system" fn Java_io_crail_spark_CrailNative_connect<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    config: JString<'l>,
    settings: JString<'l>,
    app: JString<'l>,
    host: JString<'l>,
    own: JString<'l>,
    seed: jlong,
    avoid: JString<'l>,
) -> jlong {
    guard(&mut env, 0, |env| {
        let file = string(env, &config)?;
        let settings = string(env, &settings)?;
        let app = required(env, &app, "the application")?;
        let host = address(string(env, &host)?, "spark.crail.host")?;
        let own = string(env, &own)?.and_then(|o| o.parse().ok());
        let avoid: Vec<String> = string(env, &avoid)?
            .map(|a| a.split(',').map(str::to_owned).collect())
            .unwrap_or_default();
        let config = load_config(file.as_deref(), settings.as_deref())?;
        let crail = block(connect(&config, &app, host, own, seed as u64, &avoid))??;
        Ok(ENGINES.insert(crail))
    })
}

/// `host(engine)`: the crail node the engine is on.
#[unsafe(no_mangle)]
pub extern "system" fn Java_io_crail_spark_CrailNative_host<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    engine: jlong,
) -> jni::sys::jstring {
    guard(&mut env, std::ptr::null_mut(), |env| {
        let crail = ENGINES.get(engine)?;
        Ok(env.new_string(crail.host())?.into_raw())
    })
}

/// `close(engine)`.
#[unsafe(no_mangle)]
pub extern "system" fn Java_io_crail_spark_CrailNative_close<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    engine: jlong,
) {
    guard(&mut env, (), |_| {
        ENGINES.remove(engine);
        Ok(())
    })
}

/// `registerShuffle(engine, shuffle, maps, partitions, serializer, replication)`: copies of
/// every group file (1: none).
#[unsafe(no_mangle)]
pub extern "system" fn Java_io_crail_spark_CrailNative_registerShuffle<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    engine: jlong,
    shuffle: jint,
    maps: jint,
    partitions: jint,
    serializer: JString<'l>,
    replication: jint,
) {
    guard(&mut env, (), |env| {
        let crail = ENGINES.get(engine)?;
        let serializer = required(env, &serializer, "the serializer")?;
        let (shuffle, maps, partitions) = (
            unsigned(shuffle, "shuffle")?,
            unsigned(maps, "maps")?,
            unsigned(partitions, "partitions")?,
        );
        let meta = crail_shuffle::Meta::new(maps, partitions, serializer)
            .replication(unsigned(replication, "replication")?);
        block(crail.register_shuffle_with(shuffle, meta))??;
        Ok(())
    })
}

/// `unregisterShuffle(engine, shuffle)`: whether it was registered.
#[unsafe(no_mangle)]
pub extern "system" fn Java_io_crail_spark_CrailNative_unregisterShuffle<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    engine: jlong,
    shuffle: jint,
) -> jboolean {
    guard(&mut env, 0, |_| {
        let crail = ENGINES.get(engine)?;
        let shuffle = unsigned(shuffle, "shuffle")?;
        match block(crail.unregister_shuffle(shuffle))? {
            Ok(()) => Ok(1),
            Err(crail_sdk::Error::Shuffle(crail_shuffle::Error::UnknownShuffle { .. })) => Ok(0),
            Err(e) => Err(e.into()),
        }
    })
}

/// `endApplication(engine)`: removes every shuffle and variable of the application.
#[unsafe(no_mangle)]
pub extern "system" fn Java_io_crail_spark_CrailNative_endApplication<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    engine: jlong,
) {
    guard(&mut env, (), |_| {
        let crail = ENGINES.get(engine)?;
        block(crail.end_application())??;
        Ok(())
    })
}

/// `openWriter(engine, shuffle, map, attempt, generation)`: a map writer handle. The
/// generation is the stage attempt: a rerun of the stage replaces the earlier run's output.
#[unsafe(no_mangle)]
pub extern "system" fn Java_io_crail_spark_CrailNative_openWriter<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    engine: jlong,
    shuffle: jint,
    map: jint,
    attempt: jlong,
    generation: jint,
) -> jlong {
    guard(&mut env, 0, |_| {
        let crail = ENGINES.get(engine)?;
        let (shuffle, map) = (unsigned(shuffle, "shuffle")?, unsigned(map, "map")?);
        let generation = unsigned(generation, "generation")?;
        let writing = block(async {
            let shuffle = crail.shuffle(shuffle).await?;
            let out = shuffle.map_writer(map, attempt as u64).await?;
            Ok::<_, crail_sdk::Error>(Writing {
                shuffle,
                out: out.generation(generation),
            })
        })??;
        Ok(WRITERS.insert(Mutex::new(Some(writing))))
    })
}

/// Runs `work` on writer `writer`'s output.
fn with_writer<T>(
    writer: jlong,
    work: impl AsyncFnOnce(&mut MapOutput) -> crail_sdk::Result<T>,
) -> Result<T> {
    let slot = WRITERS.get(writer)?;
    let mut guard = slot
        .lock()
        .map_err(|_| Failure::new("Internal", "a map writer's lock is poisoned"))?;
    let writing = guard
        .as_mut()
        .ok_or_else(|| Failure::new("Closed", "the map writer was committed or aborted"))?;
    Ok(block(work(&mut writing.out))??)
}

fn bytes(env: &mut JNIEnv<'_>, data: &JByteArray<'_>, off: jint, len: jint) -> Result<Vec<u8>> {
    let total = env.get_array_length(data)?;
    if off < 0 || len < 0 || off.checked_add(len).is_none_or(|end| end > total) {
        return Err(Failure::new(
            "InvalidArgument",
            format!("range {off}+{len} is outside an array of {total} bytes"),
        ));
    }
    let mut buf = vec![0u8; len as usize];
    env.get_byte_array_region(data, off, bytemuck::cast_slice_mut(&mut buf))?;
    Ok(buf)
}

/// `write(writer, partition, data, off, len)`: appends bytes already encoded by the shuffle's
/// serializer (whole records) to `partition`.
#[unsafe(no_mangle)]
pub extern "system" fn Java_io_crail_spark_CrailNative_write<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    writer: jlong,
    partition: jint,
    data: JByteArray<'l>,
    off: jint,
    len: jint,
) {
    guard(&mut env, (), |env| {
        let data = bytes(env, &data, off, len)?;
        let partition = unsigned(partition, "partition")?;
        with_writer(writer, async |out| {
            out.write_serialized(partition, &data).await
        })
    })
}

/// `writeRecord(writer, partition, data, off, len)`: appends one record with an empty key and
/// the bytes as its value (a `kv` shuffle's frame of Spark-serialized records).
#[unsafe(no_mangle)]
pub extern "system" fn Java_io_crail_spark_CrailNative_writeRecord<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    writer: jlong,
    partition: jint,
    data: JByteArray<'l>,
    off: jint,
    len: jint,
) {
    guard(&mut env, (), |env| {
        let data = bytes(env, &data, off, len)?;
        let partition = unsigned(partition, "partition")?;
        with_writer(writer, async |out| out.write(partition, b"", &data).await)
    })
}

/// `commit(writer, checksum)`: commits the output with the engine's checksum of it (Spark's
/// row checksum, 0 for none); returns the map's output as committed: `[attempt, checksum,
/// bytes of partition 0, 1, ...]`. When another attempt of the same stage attempt committed first (a task that
/// committed, then died before Spark heard of it), its output stands for this one and its
/// status is returned: any one attempt's output is the map's, as long as every reader reads
/// the same. The handle is released.
#[unsafe(no_mangle)]
pub extern "system" fn Java_io_crail_spark_CrailNative_commit<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    writer: jlong,
    checksum: jlong,
) -> jlongArray {
    guard(&mut env, std::ptr::null_mut(), |env| {
        let Writing { shuffle, mut out } = take_writer(writer)?;
        out.set_checksum(checksum as u64);
        let status = block(async {
            match out.commit().await {
                Err(crail_sdk::Error::Shuffle(crail_shuffle::Error::AlreadyCommitted {
                    map,
                    ..
                })) => shuffle.map_status(map).await,
                other => other,
            }
        })??;
        let mut out = vec![status.attempt as i64, status.checksum as i64];
        out.extend(status.bytes.iter().map(|b| *b as i64));
        let array = env.new_long_array(out.len() as i32)?;
        env.set_long_array_region(&array, 0, &out)?;
        Ok(array.into_raw())
    })
}

/// `abort(writer)`: gives the output up. The handle is released.
#[unsafe(no_mangle)]
pub extern "system" fn Java_io_crail_spark_CrailNative_abort<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    writer: jlong,
) {
    guard(&mut env, (), |_| {
        if let Ok(writing) = take_writer(writer) {
            block(writing.out.abort())?;
        }
        Ok(())
    })
}

fn take_writer(writer: jlong) -> Result<Writing> {
    let slot = WRITERS
        .remove(writer)
        .ok_or_else(|| Failure::new("Closed", "the map writer was committed or aborted"))?;
    let out = slot
        .lock()
        .map_err(|_| Failure::new("Internal", "a map writer's lock is poisoned"))?
        .take();
    out.ok_or_else(|| Failure::new("Closed", "the map writer was committed or aborted"))
}

/// A reduce task's read.
struct Reader {
    source: Source,
    /// The length of the shuffle's records, if fixed.
    record: Option<usize>,
}

enum Source {
    /// Records as they come.
    Stream(Box<Records>),
    /// The whole range sorted, and how far it was handed out.
    Sorted(Vec<u8>, usize),
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match self.source {
            Source::Stream(_) => "stream",
            Source::Sorted(..) => "sorted",
        };
        f.debug_struct("Reader")
            .field("source", &source)
            .field("record", &self.record)
            .finish()
    }
}

/// `openReader(engine, shuffle, startPartition, endPartition, startMap, endMap, attempts,
/// sorter, prefetch)` (group files fetched at once): the records of partitions `startPartition..endPartition` written by maps
/// `startMap..endMap` (bounded by the shuffle's maps), or, when `attempts` is not null, by
/// exactly the maps it names as `[map, attempt, map, attempt, ...]` (Spark's map statuses: a
/// map committed by another attempt is a fetch failure); as they come (`sorter` null) or
/// sorted by the sorter it names.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub extern "system" fn Java_io_crail_spark_CrailNative_openReader<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    engine: jlong,
    shuffle: jint,
    start_partition: jint,
    end_partition: jint,
    start_map: jint,
    end_map: jint,
    attempts: JLongArray<'l>,
    sorter: JString<'l>,
    prefetch: jint,
) -> jlong {
    guard(&mut env, 0, |env| {
        let crail = ENGINES.get(engine)?;
        let sorter = string(env, &sorter)?;
        let attempts = map_attempts(env, &attempts)?;
        let prefetch = unsigned(prefetch, "prefetch")? as usize;
        let shuffle = unsigned(shuffle, "shuffle")?;
        let partitions =
            unsigned(start_partition, "partition")?..unsigned(end_partition, "partition")?;
        let (start_map, end_map) = (unsigned(start_map, "map")?, unsigned(end_map, "map")?);
        let reader = block(async {
            let shuffle = crail.shuffle(shuffle).await?;
            // Spark asks for maps up to i32::MAX to mean all of them.
            let maps = start_map.min(shuffle.maps())..end_map.min(shuffle.maps());
            let record = shuffle
                .serializer()
                .format()
                .fixed_lens()
                .map(|(k, v)| k + v);
            let options = match attempts {
                Some(attempts) => shuffle.reader(partitions).attempts(attempts),
                None => shuffle.reader(partitions).maps(maps),
            }
            .prefetch(prefetch);
            let source = match sorter {
                Some(name) => Source::Sorted(options.sorted(&name).read_sorted().await?, 0),
                None => Source::Stream(Box::new(options.open().await?)),
            };
            Ok::<_, crail_sdk::Error>(Reader { source, record })
        })??;
        Ok(READERS.insert(Mutex::new(reader)))
    })
}

/// `[map, attempt, ...]` as pairs; `None` for a null array.
fn map_attempts(env: &mut JNIEnv<'_>, array: &JLongArray<'_>) -> Result<Option<Vec<(u32, u64)>>> {
    if array.is_null() {
        return Ok(None);
    }
    let len = env.get_array_length(array)?;
    let mut flat = vec![0i64; len as usize];
    env.get_long_array_region(array, 0, &mut flat)?;
    if !flat.len().is_multiple_of(2) {
        return Err(Failure::new(
            "InvalidArgument",
            format!("{} numbers are no (map, attempt) pairs", flat.len()),
        ));
    }
    flat.chunks_exact(2)
        .map(|pair| {
            let map = u32::try_from(pair[0]).map_err(|_| {
                Failure::new(
                    "InvalidArgument",
                    format!("map {} is out of range", pair[0]),
                )
            })?;
            Ok((map, pair[1] as u64))
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

fn with_reader<T>(reader: jlong, work: impl FnOnce(&mut Reader) -> Result<T>) -> Result<T> {
    let slot = READERS.get(reader)?;
    let mut guard = slot
        .lock()
        .map_err(|_| Failure::new("Internal", "a reader's lock is poisoned"))?;
    work(&mut guard)
}

/// `nextValue(reader)`: the next record's value, null at the end (a `kv` shuffle's frames).
#[unsafe(no_mangle)]
pub extern "system" fn Java_io_crail_spark_CrailNative_nextValue<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    reader: jlong,
) -> jbyteArray {
    guard(&mut env, std::ptr::null_mut(), |env| {
        let value = with_reader(reader, |r| match &mut r.source {
            Source::Stream(records) => Ok(block(records.next_record())??.map(|r| r.value.to_vec())),
            Source::Sorted(..) => Err(Failure::new(
                "InvalidArgument",
                "a sorted read hands out records, not values",
            )),
        })?;
        match value {
            Some(v) => Ok(env.byte_array_from_slice(&v)?.into_raw()),
            None => Ok(JObject::null().into_raw()),
        }
    })
}

/// `nextRecords(reader, dst)`: fills `dst` with whole encoded records (fixed-length ones),
/// returning the bytes filled; 0 at the end.
#[unsafe(no_mangle)]
pub extern "system" fn Java_io_crail_spark_CrailNative_nextRecords<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    reader: jlong,
    dst: JByteArray<'l>,
) -> jint {
    guard(&mut env, 0, |env| {
        let room = env.get_array_length(&dst)? as usize;
        with_reader(reader, |r| {
            let record = r.record.ok_or_else(|| {
                Failure::new(
                    "InvalidArgument",
                    "nextRecords reads fixed-length records only",
                )
            })?;
            if room < record {
                return Err(Failure::new(
                    "InvalidArgument",
                    format!("a buffer of {room} bytes holds no {record}-byte record"),
                ));
            }
            let filled = match &mut r.source {
                Source::Sorted(data, at) => {
                    let take = (room / record * record).min(data.len() - *at);
                    let batch: &[i8] = bytemuck::cast_slice(&data[*at..*at + take]);
                    env.set_byte_array_region(&dst, 0, batch)?;
                    *at += take;
                    take
                }
                Source::Stream(records) => {
                    let mut out: Vec<u8> = Vec::with_capacity(room / record * record);
                    while out.len() + record <= room {
                        let Some(r) = block(records.next_record())?? else {
                            break;
                        };
                        out.extend_from_slice(r.key);
                        out.extend_from_slice(r.value);
                    }
                    env.set_byte_array_region(&dst, 0, bytemuck::cast_slice(&out))?;
                    out.len()
                }
            };
            Ok(filled as jint)
        })
    })
}

/// `closeReader(reader)`.
#[unsafe(no_mangle)]
pub extern "system" fn Java_io_crail_spark_CrailNative_closeReader<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    reader: jlong,
) {
    guard(&mut env, (), |_| {
        READERS.remove(reader);
        Ok(())
    })
}

/// `putBroadcast(engine, id, value)`: its size.
#[unsafe(no_mangle)]
pub extern "system" fn Java_io_crail_spark_CrailNative_putBroadcast<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    engine: jlong,
    id: JString<'l>,
    value: JByteArray<'l>,
) -> jlong {
    guard(&mut env, 0, |env| {
        let crail = ENGINES.get(engine)?;
        let id = required(env, &id, "the variable")?;
        let value = env.convert_byte_array(&value)?;
        Ok(block(crail.put_broadcast(&id, &value))?? as jlong)
    })
}

/// `getBroadcast(engine, id)`: the value, read from the node's copy.
#[unsafe(no_mangle)]
pub extern "system" fn Java_io_crail_spark_CrailNative_getBroadcast<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    engine: jlong,
    id: JString<'l>,
) -> jbyteArray {
    guard(&mut env, std::ptr::null_mut(), |env| {
        let crail = ENGINES.get(engine)?;
        let id = required(env, &id, "the variable")?;
        let value = block(crail.read_broadcast(&id))??;
        Ok(env.byte_array_from_slice(&value)?.into_raw())
    })
}

/// `broadcastFetches(engine, id)`: how many times the engine's node fetched the variable.
#[unsafe(no_mangle)]
pub extern "system" fn Java_io_crail_spark_CrailNative_broadcastFetches<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    engine: jlong,
    id: JString<'l>,
) -> jlong {
    guard(&mut env, 0, |env| {
        let crail = ENGINES.get(engine)?;
        let id = required(env, &id, "the variable")?;
        let var = crail_broadcast::VarId::new(crail.app(), id);
        let fetches =
            block(crail.broadcast_client().fetches_of(&var))?.map_err(crail_sdk::Error::from)?;
        Ok(fetches as jlong)
    })
}

/// `destroyBroadcast(engine, id)`.
#[unsafe(no_mangle)]
pub extern "system" fn Java_io_crail_spark_CrailNative_destroyBroadcast<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    engine: jlong,
    id: JString<'l>,
) {
    guard(&mut env, (), |env| {
        let crail = ENGINES.get(engine)?;
        let id = required(env, &id, "the variable")?;
        block(crail.destroy_broadcast(&id))??;
        Ok(())
    })
}
