//! Every node type and namespace operation against a real namenode on 127.0.0.1:0.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{BLOCK, Beating, client, datanode, heartbeats, start, start_with, used_blocks};
use crail_store::{CreateOptions, Error, NodeType, PathProblem, Store};

/// Longer than the test namenode's lease timeout plus a reaper tick.
const LEASE_EXPIRED: Duration = Duration::from_millis(1600);

fn opts() -> CreateOptions {
    CreateOptions::default()
}

/// A namenode with one live datanode of `blocks` blocks, and a client.
async fn cluster(blocks: u64) -> (crail_store::namenode::RunningNamenode, Store, Beating) {
    let nn = start().await;
    let store = client(&nn).await;
    let id = datanode(&store, "127.0.0.1", 7000, 0, blocks).await;
    let beat = Beating(heartbeats(store.clone(), vec![id]));
    (nn, store, beat)
}

#[tokio::test]
async fn files_and_directories_with_stat() {
    let (_nn, store, _beat) = cluster(64).await;
    let dir = store.create_dir("/a", &opts()).await.unwrap();
    assert_eq!(dir.stat().node_type, NodeType::Directory);

    let lease = store.create_file("/a/f", &opts()).await.unwrap();
    let blocks = lease.allocate(0, 2).await.unwrap();
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks.iter().map(|b| b.index).collect::<Vec<_>>(), [0, 1]);
    let size = BLOCK + BLOCK / 2;
    let stat = lease.close(size).await.unwrap();
    assert_eq!((stat.size, stat.block_count), (size, 2));

    let stat = store.stat("/a/f").await.unwrap();
    assert_eq!(stat.node_type, NodeType::File);
    assert_eq!((stat.size, stat.block_count), (size, 2));
    assert!(stat.created <= stat.modified);
    let file = store.lookup("/a/f").await.unwrap().into_file().unwrap();
    // The same blocks and generations; a reader's grants are read-only.
    let read = file.all_block_locations().await.unwrap();
    let same = |b: &crail_store::BlockLocation| (b.index, b.datanode, b.offset, b.grant.generation);
    assert!(read.iter().map(same).eq(blocks.iter().map(same)));
    assert!(blocks.iter().all(|b| b.grant.write) && read.iter().all(|b| !b.grant.write));

    let dir_stat = store.stat("/a").await.unwrap();
    assert_eq!(dir_stat.children, 1);
    assert!(store.lookup("/a").await.unwrap().into_file().is_err());

    let err = store.create_dir("/a", &opts()).await.unwrap_err();
    assert!(
        matches!(&err, Error::AlreadyExists { path } if path == "/a"),
        "{err}"
    );
    let err = store.create_file("/missing/f", &opts()).await.unwrap_err();
    assert!(
        matches!(&err, Error::NotFound { path } if path == "/missing"),
        "{err}"
    );
    let err = store.create_file("/a/f/g", &opts()).await.unwrap_err();
    assert!(
        matches!(&err, Error::NotAContainer { path, actual: NodeType::File } if path == "/a/f"),
        "{err}"
    );
    let err = store.lookup("/a/f/g").await.unwrap_err();
    assert!(matches!(err, Error::NotAContainer { .. }), "{err}");
    let err = store.create_dir("/", &opts()).await.unwrap_err();
    assert!(matches!(err, Error::RootNotAllowed { .. }), "{err}");
    let err = store.stat("/nothing").await.unwrap_err();
    assert_eq!(err.to_string(), "/nothing: no such file or directory");
}

#[tokio::test]
async fn a_file_has_one_writer_at_a_time_and_leases_expire() {
    let (_nn, store, _beat) = cluster(64).await;
    let first = store.create_file("/f", &opts()).await.unwrap();
    let err = store.open_write("/f").await.unwrap_err();
    assert!(matches!(err, Error::LeaseHeld { .. }), "{err}");

    // Renewing keeps it; uncommitted blocks are the writer's until it closes or the lease ends.
    first.allocate(0, 3).await.unwrap();
    first.renew().await.unwrap();
    assert_eq!(used_blocks(&store).await, 3);

    // The writer goes silent: its lease expires, its uncommitted blocks are freed.
    tokio::time::sleep(LEASE_EXPIRED).await;
    assert_eq!(used_blocks(&store).await, 0);
    assert_eq!(store.stat("/f").await.unwrap().block_count, 0);
    let err = first.allocate(0, 1).await.unwrap_err();
    assert!(
        matches!(&err, Error::LeaseLost { path } if path == "/f"),
        "{err}"
    );

    // Someone else may now write.
    let second = store.open_write("/f").await.unwrap();
    second.allocate(0, 1).await.unwrap();
    second.close(10).await.unwrap();
    let err = first.close(5).await.unwrap_err();
    assert!(matches!(err, Error::LeaseLost { .. }), "{err}");
    assert_eq!(store.stat("/f").await.unwrap().size, 10);
}

#[tokio::test]
async fn a_writer_commits_its_size_and_keeps_writing() {
    let (_nn, store, _beat) = cluster(64).await;
    let mut lease = store.create_file("/f", &opts()).await.unwrap();
    lease.allocate(0, 2).await.unwrap();
    let stat = lease.commit(10).await.unwrap();
    assert_eq!((stat.size, stat.block_count), (10, 2));
    assert_eq!(store.stat("/f").await.unwrap().size, 10);
    // Still the only writer, with every block kept.
    let err = store.open_write("/f").await.unwrap_err();
    assert!(matches!(err, Error::LeaseHeld { .. }), "{err}");
    assert_eq!(used_blocks(&store).await, 2);
    let err = lease.commit(3 * BLOCK).await.unwrap_err();
    assert!(matches!(err, Error::SizeBeyondBlocks { .. }), "{err}");
    lease.commit(BLOCK + 5).await.unwrap();
    assert_eq!(store.stat("/f").await.unwrap().size, BLOCK + 5);
    lease.close(BLOCK + 7).await.unwrap();
    assert_eq!(store.stat("/f").await.unwrap().size, BLOCK + 7);

    // A keyvalue value becomes current only when closed.
    store.create_table("/t", &opts()).await.unwrap();
    let mut value = store.put("/t/k", &opts()).await.unwrap();
    value.allocate(0, 1).await.unwrap();
    let err = value.commit(1).await.unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
}

#[tokio::test]
async fn a_ticket_lends_a_lease_to_another_client_without_giving_it_up() {
    let (nn, store, _beat) = cluster(64).await;
    let mut lease = store.create_file("/f", &opts()).await.unwrap();
    lease.allocate(0, 1).await.unwrap();
    lease.commit(10).await.unwrap();
    let ticket = lease.ticket(10);
    assert_eq!((ticket.path.as_str(), ticket.size), ("/f", 10));

    // Another client (another process, in a real deployment) commits through the ticket.
    let other = client(&nn).await;
    let mut writer = other.borrow_lease(ticket.clone());
    assert_eq!(writer.position(), 10);
    writer.renew().await.unwrap();
    assert_eq!(writer.sync().await.unwrap().size, 10);
    drop(writer);
    // Dropping the borrowed writer gave nothing up: the owner still holds the only lease.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let err = store.open_write("/f").await.unwrap_err();
    assert!(matches!(err, Error::LeaseHeld { .. }), "{err}");
    lease.commit(BLOCK).await.unwrap();
    assert_eq!(store.stat("/f").await.unwrap().size, BLOCK);

    // Once the owner lets go, the ticket is worth nothing.
    lease.close(BLOCK).await.unwrap();
    let err = other.borrow_lease(ticket).renew().await.unwrap_err();
    assert!(matches!(err, Error::LeaseLost { .. }), "{err}");
}

#[tokio::test]
async fn append_overwrite_and_truncate() {
    let (_nn, store, _beat) = cluster(64).await;
    let lease = store.create_file("/f", &opts()).await.unwrap();
    let first = lease.allocate(0, 1).await.unwrap();
    lease.close(BLOCK).await.unwrap();

    // Append: block 0 comes back unchanged, block 1 is new.
    let lease = store.open_write("/f").await.unwrap();
    assert_eq!(lease.stat().size, BLOCK);
    let blocks = lease.allocate(0, 2).await.unwrap();
    assert_eq!(blocks[0], first[0]);
    lease.close(BLOCK + 10).await.unwrap();
    assert_eq!(used_blocks(&store).await, 2);

    // Overwrite shorter: blocks past the new size are freed.
    let lease = store.open_write("/f").await.unwrap();
    lease.close(100).await.unwrap();
    let stat = store.stat("/f").await.unwrap();
    assert_eq!((stat.size, stat.block_count), (100, 1));
    assert_eq!(used_blocks(&store).await, 1);

    // Out of range: a hole, a size past the blocks, a read past the end.
    let lease = store.open_write("/f").await.unwrap();
    let err = lease.allocate(5, 1).await.unwrap_err();
    assert!(
        matches!(&err, Error::BlockOutOfRange { path, index: 5, blocks: 1 } if path == "/f"),
        "{err}"
    );
    let file = store.lookup("/f").await.unwrap().into_file().unwrap();
    let err = file.block_locations(0, 2).await.unwrap_err();
    assert!(
        matches!(err, Error::BlockOutOfRange { index: 1, .. }),
        "{err}"
    );
    let err = lease.close(2 * BLOCK).await.unwrap_err();
    assert!(
        matches!(err, Error::SizeBeyondBlocks { size, capacity, .. } if size == 2 * BLOCK && capacity == BLOCK),
        "{err}"
    );
    // The failed close dropped the lease handle, which aborts: the file is writable again.
    tokio::time::sleep(Duration::from_millis(50)).await;
    store
        .open_write("/f")
        .await
        .unwrap()
        .close(100)
        .await
        .unwrap();
}

#[tokio::test]
async fn multifile_children_are_written_concurrently_and_read_in_name_order() {
    let (_nn, store, _beat) = cluster(64).await;
    let multi = store.create_multifile("/m", &opts()).await.unwrap();
    let mut writers = Vec::new();
    for i in 0..4u64 {
        let multi = multi.clone();
        writers.push(tokio::spawn(async move {
            let lease = multi
                .create_child(&format!("part-{i}"), &CreateOptions::default())
                .await
                .unwrap();
            lease.allocate(0, 1).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            lease.close(100 * (i + 1)).await.unwrap();
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let stat = store.stat("/m").await.unwrap();
    assert_eq!(stat.node_type, NodeType::MultiFile);
    assert_eq!((stat.size, stat.children), (100 + 200 + 300 + 400, 4));
    let children = multi.children().await.unwrap();
    let names: Vec<&str> = children.iter().map(|c| c.path()).collect();
    assert_eq!(names, ["/m/part-0", "/m/part-1", "/m/part-2", "/m/part-3"]);
    let err = store.create_dir("/m/sub", &opts()).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidChild {
                parent: NodeType::MultiFile,
                child: NodeType::Directory,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn tables_hold_only_keyvalues_and_do_not_nest() {
    let (_nn, store, _beat) = cluster(64).await;
    let table = store.create_table("/t", &opts()).await.unwrap();
    for (ty, path) in [
        (NodeType::File, "/t/f"),
        (NodeType::Table, "/t/inner"),
        (NodeType::Directory, "/t/d"),
        (NodeType::MultiFile, "/t/m"),
    ] {
        let err = store.create(path, ty, &opts()).await.unwrap_err();
        assert!(
            matches!(err, Error::InvalidChild { parent: NodeType::Table, child, .. } if child == ty),
            "{err}"
        );
    }
    store.create_dir("/d", &opts()).await.unwrap();
    let err = store.put("/d/k", &opts()).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidChild {
                parent: NodeType::Directory,
                child: NodeType::KeyValue,
                ..
            }
        ),
        "{err}"
    );
    for key in ["b", "a", "c"] {
        let lease = table.put(key, &opts()).await.unwrap();
        lease.allocate(0, 1).await.unwrap();
        lease.close(1).await.unwrap();
    }
    assert_eq!(table.keys().await.unwrap(), ["a", "b", "c"]);
    // create() never replaces a value; only put() does.
    let err = store
        .create("/t/a", NodeType::KeyValue, &opts())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::AlreadyExists { path } if path == "/t/a"),
        "{err}"
    );
    assert_eq!(store.stat("/t/a").await.unwrap().size, 1);
    let err = store.open_write("/t/a").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::WrongType {
                expected: NodeType::File,
                ..
            }
        ),
        "{err}"
    );
}

/// Puts a value of `blocks` blocks under `key` and commits it.
async fn put_value(store: &Store, path: &str, blocks: u64) {
    let lease = store.put(path, &opts()).await.unwrap();
    lease.allocate(0, blocks).await.unwrap();
    lease.close(blocks * BLOCK).await.unwrap();
}

#[tokio::test]
async fn keyvalue_last_writer_wins_and_readers_keep_the_old_value() {
    let (_nn, store, _beat) = cluster(64).await;
    store.create_table("/t", &opts()).await.unwrap();

    // Not visible before its first commit; an aborted first put leaves nothing.
    let lease = store.put("/t/k", &opts()).await.unwrap();
    lease.allocate(0, 2).await.unwrap();
    assert!(matches!(
        store.get("/t/k").await,
        Err(Error::NotFound { .. })
    ));
    lease.abort().await.unwrap();
    assert_eq!(used_blocks(&store).await, 0);

    put_value(&store, "/t/k", 1).await;
    let reader = store.get("/t/k").await.unwrap();
    assert!(reader.is_held());
    let old_blocks = reader.block_locations(0, 1).await.unwrap();

    // Two overlapping re-puts: B starts first, C closes first, B closes last and wins.
    let b = store.put("/t/k", &opts()).await.unwrap();
    let c = store.put("/t/k", &opts()).await.unwrap();
    b.allocate(0, 2).await.unwrap();
    c.allocate(0, 3).await.unwrap();
    c.close(3 * BLOCK).await.unwrap();
    assert_eq!(store.stat("/t/k").await.unwrap().size, 3 * BLOCK);
    b.close(2 * BLOCK).await.unwrap();
    assert_eq!(store.stat("/t/k").await.unwrap().size, 2 * BLOCK);

    // C's value was replaced unread and is gone; the reader's old value is still there.
    assert_eq!(used_blocks(&store).await, 2 + 1);
    assert_eq!(reader.block_locations(0, 1).await.unwrap(), old_blocks);
    reader.release().await.unwrap();
    assert_eq!(used_blocks(&store).await, 2);

    // A reader that vanishes without releasing: its hold expires with the lease timeout.
    let ghost = store.get("/t/k").await.unwrap();
    std::mem::forget(ghost);
    put_value(&store, "/t/k", 1).await;
    assert_eq!(used_blocks(&store).await, 2 + 1);
    tokio::time::sleep(LEASE_EXPIRED).await;
    assert_eq!(used_blocks(&store).await, 1);
}

#[tokio::test]
async fn concurrent_writers_of_one_key_are_bounded() {
    let nn = start_with(crail_store::NamenodeConfig {
        max_writers_per_key: 2,
        ..common::fast_config()
    })
    .await;
    let store = client(&nn).await;
    store.create_table("/t", &opts()).await.unwrap();
    let first = store.put("/t/k", &opts()).await.unwrap();
    let _second = store.put("/t/k", &opts()).await.unwrap();
    let err = store.put("/t/k", &opts()).await.unwrap_err();
    assert!(
        matches!(&err, Error::TooManyWriters { path, max: 2 } if path == "/t/k"),
        "{err}"
    );
    first.close(0).await.unwrap();
    store.put("/t/k", &opts()).await.unwrap();
}

#[tokio::test]
async fn concurrent_puts_leave_exactly_one_value_and_no_leaked_blocks() {
    let (_nn, store, _beat) = cluster(256).await;
    store.create_table("/t", &opts()).await.unwrap();
    let mut puts = Vec::new();
    for blocks in 1..=8u64 {
        let store = store.clone();
        puts.push(tokio::spawn(async move {
            let lease = store.put("/t/k", &CreateOptions::default()).await.unwrap();
            lease.allocate(0, blocks).await.unwrap();
            tokio::time::sleep(Duration::from_millis(blocks * 7 % 5)).await;
            lease.close(blocks * BLOCK).await.unwrap();
        }));
    }
    for p in puts {
        p.await.unwrap();
    }
    let value = store.get("/t/k").await.unwrap();
    let blocks = value.size() / BLOCK;
    assert!((1..=8).contains(&blocks));
    assert_eq!(used_blocks(&store).await, blocks);
    value.release().await.unwrap();
    store.delete("/t", true).await.unwrap();
    assert_eq!(used_blocks(&store).await, 0);
}

#[tokio::test]
async fn delete_is_recursive_only_when_asked_and_frees_blocks() {
    let (_nn, store, _beat) = cluster(64).await;
    store.create_dir("/d", &opts()).await.unwrap();
    store.create_dir("/d/e", &opts()).await.unwrap();
    store.create_table("/d/t", &opts()).await.unwrap();
    for i in 0..3 {
        let lease = store
            .create_file(&format!("/d/e/f{i}"), &opts())
            .await
            .unwrap();
        lease.allocate(0, 2).await.unwrap();
        lease.close(2 * BLOCK).await.unwrap();
    }
    put_value(&store, "/d/t/k", 1).await;
    let writer = store.create_file("/d/open", &opts()).await.unwrap();
    writer.allocate(0, 1).await.unwrap();
    assert_eq!(used_blocks(&store).await, 8);

    let err = store.delete("/d", false).await.unwrap_err();
    assert!(
        matches!(&err, Error::NotEmpty { path } if path == "/d"),
        "{err}"
    );
    store.delete("/d", true).await.unwrap();
    assert_eq!(used_blocks(&store).await, 0);
    assert!(matches!(
        store.stat("/d/e/f0").await,
        Err(Error::NotFound { .. })
    ));
    let err = writer.allocate(1, 1).await.unwrap_err();
    assert!(matches!(err, Error::UnknownFile { .. }), "{err}");
    assert!(matches!(
        store.delete("/d", false).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store.delete("/", true).await,
        Err(Error::RootNotAllowed { .. })
    ));
    assert_eq!(store.stat("/").await.unwrap().children, 0);
}

#[tokio::test]
async fn rename_moves_atomically_within_the_rules() {
    let (_nn, store, _beat) = cluster(64).await;
    store.create_dir("/a", &opts()).await.unwrap();
    store.create_dir("/a/sub", &opts()).await.unwrap();
    store.create_dir("/b", &opts()).await.unwrap();
    let lease = store.create_file("/a/sub/f", &opts()).await.unwrap();
    lease.allocate(0, 1).await.unwrap();
    let before = store.stat("/a/sub/f").await.unwrap();

    store.rename("/a/sub", "/b/moved").await.unwrap();
    assert!(matches!(
        store.stat("/a/sub/f").await,
        Err(Error::NotFound { .. })
    ));
    let after = store.stat("/b/moved/f").await.unwrap();
    assert_eq!((after.id, after.file_id), (before.id, before.file_id));
    // The writer does not notice: block operations address the data, not the path.
    lease.allocate(1, 1).await.unwrap();
    lease.close(2 * BLOCK).await.unwrap();
    assert_eq!(store.stat("/b/moved/f").await.unwrap().size, 2 * BLOCK);
    assert_eq!(store.stat("/a").await.unwrap().children, 0);

    let err = store.rename("/b", "/b/moved/inside").await.unwrap_err();
    assert!(matches!(err, Error::MoveIntoItself { .. }), "{err}");
    store.create_dir("/c", &opts()).await.unwrap();
    let err = store.rename("/c", "/b").await.unwrap_err();
    assert!(
        matches!(&err, Error::AlreadyExists { path } if path == "/b"),
        "{err}"
    );
    store.create_table("/t", &opts()).await.unwrap();
    put_value(&store, "/t/k", 1).await;
    let err = store.rename("/t/k", "/c/k").await.unwrap_err();
    assert!(matches!(err, Error::InvalidChild { .. }), "{err}");
    store.create_table("/t2", &opts()).await.unwrap();
    store.rename("/t/k", "/t2/k").await.unwrap();
    assert_eq!(store.get("/t2/k").await.unwrap().size(), BLOCK);
    let err = store.rename("/", "/x").await.unwrap_err();
    assert!(matches!(err, Error::RootNotAllowed { .. }), "{err}");
    let err = store.rename("/nope", "/x").await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    store.rename("/c", "/c").await.unwrap();
}

#[tokio::test]
async fn rename_refuses_moves_that_break_path_limits() {
    let nn = start_with(crail_store::NamenodeConfig {
        max_depth: 4,
        ..common::fast_config()
    })
    .await;
    let store = client(&nn).await;
    store.create_dir("/a", &opts()).await.unwrap();
    store.create_dir("/a/b", &opts()).await.unwrap();
    store.create_dir("/a/b/c", &opts()).await.unwrap();
    store.create_dir("/x", &opts()).await.unwrap();
    store.create_dir("/x/y", &opts()).await.unwrap();
    let err = store.rename("/a", "/x/y/a").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidPath {
                problem: PathProblem::TooDeep { depth: 5, max: 4 },
                ..
            }
        ),
        "{err}"
    );
    let err = store.create_dir("/a/b/c/d/e", &opts()).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidPath {
                problem: PathProblem::TooDeep { .. },
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn listings_page_in_name_order_and_skip_non_enumerable_nodes() {
    let (_nn, store, _beat) = cluster(8).await;
    store.create_dir("/d", &opts()).await.unwrap();
    let mut creates = Vec::new();
    for i in 0..2500 {
        let store = store.clone();
        creates.push(tokio::spawn(async move {
            store
                .create(
                    &format!("/d/f{i:05}"),
                    NodeType::File,
                    &CreateOptions::default(),
                )
                .await
                .unwrap();
        }));
    }
    for c in creates {
        c.await.unwrap();
    }
    let hidden = CreateOptions::default().enumerable(false);
    store
        .create("/d/hidden", NodeType::File, &hidden)
        .await
        .unwrap();
    assert!(!store.stat("/d/hidden").await.unwrap().enumerable);

    let all = store.list("/d").await.unwrap();
    assert_eq!(all.len(), 2500);
    let names: Vec<&str> = all.iter().map(|e| e.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted);
    assert_eq!(names.iter().collect::<HashSet<_>>().len(), 2500);
    assert!(!names.contains(&"hidden"));
    assert_eq!(store.stat("/d").await.unwrap().children, 2501);

    let (page, more) = store.list_page("/d", "f00009", 3).await.unwrap();
    let names: Vec<&str> = page.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["f00010", "f00011", "f00012"]);
    assert!(more);
    let (page, more) = store.list_page("/d", "f02498", 10).await.unwrap();
    assert_eq!(page.len(), 1);
    assert!(!more);
    let err = store.list("/d/f00001").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotAContainer {
                actual: NodeType::File,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn malformed_paths_are_typed_errors() {
    let (_nn, store, _beat) = cluster(8).await;
    for (path, problem) in [
        ("relative", PathProblem::NotAbsolute),
        ("", PathProblem::NotAbsolute),
        ("/a//b", PathProblem::EmptyComponent),
        ("/a/", PathProblem::EmptyComponent),
        ("/a/./b", PathProblem::DotComponent),
        ("/a/../b", PathProblem::DotComponent),
        ("/nul\0byte", PathProblem::Nul),
    ] {
        let err = store.stat(path).await.unwrap_err();
        assert!(
            matches!(&err, Error::InvalidPath { problem: p, .. } if *p == problem),
            "{path:?}: {err}"
        );
    }
    // Limits are the namenode's to enforce.
    let long = format!("/{}", "n".repeat(300));
    let err = store.create_dir(&long, &opts()).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidPath {
                problem: PathProblem::NameTooLong { len: 300, max: 255 },
                ..
            }
        ),
        "{err}"
    );
}

/// Creates an empty file and closes it.
async fn empty_file(store: &Store, path: &str) {
    store
        .create_file(path, &opts())
        .await
        .unwrap()
        .close(0)
        .await
        .unwrap();
}

#[tokio::test]
async fn each_application_is_held_to_its_quota_of_nodes_and_bytes() {
    let nn = start_with(crail_store::NamenodeConfig {
        app_max_nodes: 4,
        app_max_bytes: crail_store::ByteSize(3 * BLOCK),
        ..common::fast_config()
    })
    .await;
    let store = client(&nn).await;
    let id = datanode(&store, "127.0.0.1", 7000, 0, 64).await;
    let _beat = Beating(heartbeats(store.clone(), vec![id]));
    store.create_dir("/crail-shuffle", &opts()).await.unwrap();
    for app in ["a", "b"] {
        store
            .create_dir(&format!("/crail-shuffle/{app}"), &opts())
            .await
            .unwrap();
    }

    // Nodes: four below /crail-shuffle/a, the fifth refused; b is not affected.
    store
        .create_dir("/crail-shuffle/a/d", &opts())
        .await
        .unwrap();
    for i in 0..3 {
        let path = format!("/crail-shuffle/a/d/f{i}");
        empty_file(&store, &path).await;
    }
    let err = store
        .create_file("/crail-shuffle/a/d/f3", &opts())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::QuotaExceeded { app, what, limit: 4, used: 4 }
            if app == "/crail-shuffle/a" && what == "namespace nodes"),
        "{err}"
    );
    assert!(
        err.to_string().contains("quota of 4 namespace nodes"),
        "{err}"
    );
    store
        .create_dir("/crail-shuffle/b/d", &opts())
        .await
        .unwrap();
    // Deleting gives the nodes back.
    store.delete("/crail-shuffle/a/d/f0", false).await.unwrap();
    store
        .create_dir("/crail-shuffle/a/e", &opts())
        .await
        .unwrap();

    // Bytes: three blocks, the fourth refused and nothing allocated for it.
    let writer = store
        .create_file("/crail-shuffle/b/big", &opts())
        .await
        .unwrap();
    writer.allocate(0, 3).await.unwrap();
    let err = writer.allocate(3, 1).await.unwrap_err();
    assert!(
        matches!(&err, Error::QuotaExceeded { what, limit, .. }
            if what == "bytes" && *limit == 3 * BLOCK),
        "{err}"
    );
    assert_eq!(used_blocks(&store).await, 3);
    writer.close(3 * BLOCK).await.unwrap();
    // A file moved into another application takes its charges along, within that quota.
    let err = store
        .rename("/crail-shuffle/b/big", "/crail-shuffle/a/big")
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::QuotaExceeded { .. }), "{err}");
    store.delete("/crail-shuffle/a/e", false).await.unwrap();
    store
        .rename("/crail-shuffle/b/big", "/crail-shuffle/a/big")
        .await
        .unwrap();
    let err = store
        .create_file("/crail-shuffle/a/more", &opts())
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::QuotaExceeded { .. }), "{err}");
    let writer = store
        .create_file("/crail-shuffle/b/again", &opts())
        .await
        .unwrap();
    writer.allocate(0, 3).await.unwrap();
    writer.close(3 * BLOCK).await.unwrap();

    // An application's directory stays one; nothing else becomes one by a move.
    let err = store
        .rename("/crail-shuffle/a", "/crail-shuffle/b/a")
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::NotPermitted { .. }), "{err}");
    let err = store
        .rename("/crail-shuffle/b/again", "/crail-shuffle/again")
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::NotPermitted { .. }), "{err}");

    // Nor does a directory become a root of applications by a move.
    store.create_dir("/x", &opts()).await.unwrap();
    let err = store.rename("/x", "/crail-broadcast").await.unwrap_err();
    assert!(matches!(&err, Error::NotPermitted { .. }), "{err}");

    // Deleting an application gives back everything; outside the roots there is no quota.
    store.delete("/crail-shuffle/a", true).await.unwrap();
    store.delete("/crail-shuffle/b", true).await.unwrap();
    assert_eq!(used_blocks(&store).await, 0);
    store.create_dir("/crail-shuffle/a", &opts()).await.unwrap();
    for i in 0..4 {
        let path = format!("/crail-shuffle/a/f{i}");
        empty_file(&store, &path).await;
    }
    store.create_dir("/elsewhere", &opts()).await.unwrap();
    for i in 0..10 {
        store
            .create_dir(&format!("/elsewhere/{i}"), &opts())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn the_whole_namespace_is_bounded_whatever_the_applications() {
    let nn = start_with(crail_store::NamenodeConfig {
        max_nodes: 6,
        ..common::fast_config()
    })
    .await;
    let store = client(&nn).await;
    store.create_dir("/crail-shuffle", &opts()).await.unwrap();
    // The root and /crail-shuffle, then four applications (each within its own quota).
    for app in 0..4 {
        let path = format!("/crail-shuffle/app-{app}");
        store.create_dir(&path, &opts()).await.unwrap();
    }
    let err = store
        .create_dir("/crail-shuffle/app-4", &opts())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::QuotaExceeded { app, limit: 6, .. } if app == "/"),
        "{err}"
    );
    store.delete("/crail-shuffle/app-0", true).await.unwrap();
    store
        .create_dir("/crail-shuffle/app-4", &opts())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journaled_namespace_outlives_its_namenode_and_clients_wait_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = crail_store::NamenodeConfig {
        journal: Some(dir.path().to_owned()),
        ..common::fast_config()
    };
    let nn = start_with(config.clone()).await;
    let addr = nn.addr();
    let store = client(&nn).await;
    store
        .create_dir("/kept", &CreateOptions::default())
        .await
        .unwrap();
    store
        .create_dir("/kept/inner", &CreateOptions::default())
        .await
        .unwrap();
    store.rename("/kept/inner", "/kept/moved").await.unwrap();
    store
        .create_dir("/gone", &CreateOptions::default())
        .await
        .unwrap();
    store.delete("/gone", false).await.unwrap();
    // A datanode with an identity of its own.
    let host = common::ip("127.0.0.2");
    let spec = crail_store::DatanodeSpec {
        host,
        address: std::net::SocketAddr::new(host, 7000),
        tier: "dram".into(),
        storage_class: 0,
        capacity: 8 * BLOCK,
    };
    let dn = Store::connect(&common::client_config(&nn).with_local_host(host))
        .await
        .unwrap();
    let first = dn.register_datanode_as(&spec, &[7; 16], &[]).await.unwrap();

    nn.shutdown().await.unwrap();
    // The namenode comes back on the same address a moment later; the client's next call
    // waits for it instead of failing.
    let restart = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        start_with(crail_store::NamenodeConfig {
            listen: addr,
            ..config
        })
        .await
    });
    let stat = store.stat("/kept/moved").await.unwrap();
    assert_eq!(stat.node_type, NodeType::Directory);
    let _nn = restart.await.unwrap();
    assert!(matches!(
        store.stat("/gone").await.unwrap_err(),
        Error::NotFound { .. }
    ));
    assert!(matches!(
        store.stat("/kept/inner").await.unwrap_err(),
        Error::NotFound { .. }
    ));
    // The datanode must register again, and gets its old id back under its identity.
    let err = dn.heartbeat(&first).await.unwrap_err();
    assert!(matches!(err, Error::UnknownDatanode { .. }), "{err}");
    let again = dn.register_datanode_as(&spec, &[7; 16], &[]).await.unwrap();
    assert_eq!(again.id, first.id);
    dn.heartbeat(&again).await.unwrap();
    // Another identity is another datanode: a new id, never one a journal holds blocks of.
    let other = crail_store::DatanodeSpec {
        address: std::net::SocketAddr::new(host, 7001),
        ..spec
    };
    let third = dn
        .register_datanode_as(&other, &[8; 16], &[])
        .await
        .unwrap();
    assert!(third.id.0 > first.id.0);
}
