//! Records through the store's file streams: a real namenode and a real dram datanode (in
//! this process), a `RecordWriter` into a file and a `RecordReader` back, with records that
//! straddle the store's buffers.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use crail_serializers::Serializer;
use crail_serializers::stream::{RecordReader, RecordWriter};
use crail_store::datanode::Datanode;
use crail_store::namenode::RunningNamenode;
use crail_store::{ByteSize, ClientConfig, CreateOptions, DatanodeConfig, NamenodeConfig, Store};

async fn store() -> (RunningNamenode, Store) {
    let nn = RunningNamenode::start(NamenodeConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..NamenodeConfig::default()
    })
    .await
    .unwrap();
    let client = ClientConfig {
        // Small buffers: many chunks, and records cut at their edges.
        buffer_size: ByteSize(64 << 10),
        ..ClientConfig::for_namenode(nn.addr())
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let dn = Datanode::start(
        listener,
        DatanodeConfig {
            capacity: ByteSize(64 << 20),
            ..DatanodeConfig::default()
        },
        client.clone(),
    )
    .await
    .unwrap();
    tokio::spawn(dn.serve(std::future::pending()));
    (nn, Store::connect(&client).await.unwrap())
}

fn record(i: u32, fixed: bool) -> (Vec<u8>, Vec<u8>) {
    let key = if fixed {
        let mut k = i.to_be_bytes().to_vec();
        k.resize(10, 7);
        k
    } else {
        format!("key-{i}").into_bytes()
    };
    let len = if fixed { 90 } else { (i % 300) as usize };
    let value = (0..len).map(|j| (i as usize * 31 + j) as u8).collect();
    (key, value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_round_trip_through_store_files() {
    let (_nn, store) = store().await;
    for name in ["fixed:10:90", "fixed:10:90+lz4", "kv", "kv+crc", "kv+lz4"] {
        let ser = Serializer::by_name(name).unwrap();
        let fixed = name.starts_with("fixed");
        let path = format!("/{}", name.replace([':', '+'], "-"));
        let lease = store
            .create_file(&path, &CreateOptions::default())
            .await
            .unwrap();
        let mut writer = RecordWriter::new(lease.writer(), &ser, 100_000);
        for i in 0..20_000 {
            let (k, v) = record(i, fixed);
            writer.push(&k, &v).await.unwrap();
        }
        let stat = writer.close().await.unwrap();
        assert!(stat.size > 0);

        let file = store.lookup(&path).await.unwrap().into_file().unwrap();
        let mut reader = RecordReader::new(file.reader(), &ser);
        let mut i = 0;
        while let Some(r) = reader.next_record().await.unwrap() {
            let (k, v) = record(i, fixed);
            assert!(r.key == k && r.value == v, "{name}: record {i} differs");
            i += 1;
        }
        assert_eq!(i, 20_000, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_cut_inside_a_record_is_a_typed_error() {
    let (_nn, store) = store().await;
    let ser = Serializer::by_name("fixed:10:90").unwrap();
    // 250 bytes: two records and half of a third.
    store
        .write_file("/cut", &[5u8; 250], &CreateOptions::default())
        .await
        .unwrap();
    let file = store.lookup("/cut").await.unwrap().into_file().unwrap();
    let mut reader = RecordReader::new(file.reader(), &ser);
    assert!(reader.next_record().await.unwrap().is_some());
    assert!(reader.next_record().await.unwrap().is_some());
    let err = reader.next_record().await.unwrap_err();
    assert!(
        err.to_string()
            .contains("offset 200 is incomplete (50 bytes"),
        "{err}"
    );
}
