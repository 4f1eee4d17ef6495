//! The configuration's tests: parsing, variables, validation, and docs/config.md kept current.

use super::*;

#[test]
fn defaults_are_valid_and_round_trip_through_toml() {
    let config = Config::default();
    config.namenode.validate().unwrap();
    let text = config.to_toml();
    let back = Config::from_toml(&text).unwrap();
    assert_eq!(back.namenode.block_size, ByteSize(1 << 20));
    assert_eq!(back.namenode.lease_timeout, Duration::from_secs(10));
    assert_eq!(back.client.namenode, "127.0.0.1:9060");
}

#[test]
fn reads_human_units_and_the_secret() {
    let config = Config::from_toml(
        r#"
        [namenode]
        block_size = "256KiB"
        lease_timeout = "500ms"
        [client]
        namenode = "127.0.0.2:9999"
        [security]
        secret = "xyz-0123456789abcdef"
        "#,
    )
    .unwrap();
    assert_eq!(config.namenode.block_size.bytes(), 256 << 10);
    assert_eq!(config.namenode.lease_timeout, Duration::from_millis(500));
    assert_eq!(config.namenode.secret, Secret::new("xyz-0123456789abcdef"));
    assert_eq!(config.client.secret, Secret::new("xyz-0123456789abcdef"));
}

#[test]
fn refuses_bad_values_with_the_key() {
    let err = Config::from_toml("[namenode]\nblock_size = \"1000\"").unwrap_err();
    assert!(matches!(&err, Error::Config { key, .. } if key == "namenode.block_size"));
    let err = Config::from_toml("[namenode]\nblok_size = 1").unwrap_err();
    assert!(err.to_string().contains("blok_size"), "{err}");
    let err = Config::from_toml("[security]\nsecret = \"\"").unwrap_err();
    assert!(matches!(&err, Error::Config { key, .. } if key == "security.secret"));
}

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn the_environment_overrides_the_file_which_overrides_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("crail.toml");
    std::fs::write(
        &file,
        "[client]\nnamenode = \"127.0.0.9:1\"\noutstanding = 2\n[namenode]\nblock_size = \"2MiB\"\n",
    )
    .unwrap();
    let config = Config::load(Some(&file), []).unwrap();
    assert_eq!(config.client.namenode, "127.0.0.9:1");
    assert_eq!(config.client.outstanding, 2);
    assert_eq!(config.namenode.block_size, ByteSize(2 << 20));
    let config = Config::load(
        Some(&file),
        env(&[
            ("CRAIL_CLIENT_OUTSTANDING", "8"),
            ("CRAIL_CLIENT_FAST_PATH", "false"),
            ("CRAIL_CLIENT_BUSY_POLL", "0s"),
            ("CRAIL_DATANODE_STORAGE_CLASS", "3"),
            ("CRAIL_SECURITY_SECRET", "s3-0123456789abcdef"),
            ("CRAIL_CONF", "ignored: not a key"),
            ("PATH", "/bin"),
        ]),
    )
    .unwrap();
    assert_eq!(
        config.client.namenode, "127.0.0.9:1",
        "the file still counts"
    );
    assert_eq!(config.client.outstanding, 8);
    assert!(!config.client.fast_path);
    assert_eq!(config.client.busy_poll, Duration::ZERO);
    assert_eq!(config.datanode.storage_class, Some(3));
    assert_eq!(config.client.secret, Secret::new("s3-0123456789abcdef"));
    assert_eq!(config.namenode.block_size, ByteSize(2 << 20));
}

#[test]
fn bad_environment_values_name_their_variable() {
    for (name, value, says) in [
        ("CRAIL_CLIENT_NAMNODE", "x", "not a configuration key"),
        ("CRAIL_CLIENT_OUTSTANDING", "many", "not a whole number"),
        ("CRAIL_CLIENT_FAST_PATH", "maybe", "not true or false"),
        ("CRAIL_NAMENODE_BLOCK_SIZE", "1000", "multiple of 4KiB"),
        ("CRAIL_NAMENODE_BLOCK_SIZE", "big", "not a valid size"),
    ] {
        let err = Config::load(None, env(&[(name, value)])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(says), "{name}={value}: {text}");
        assert!(
            text.contains(name) || text.contains("block_size"),
            "{name}={value}: {text}"
        );
    }
    let err = Config::load(Some(Path::new("/nonexistent/crail.toml")), []).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/crail.toml"), "{err}");
}

#[test]
fn every_key_is_documented_with_its_default() {
    let keys = keys();
    for k in &keys {
        assert!(
            !k.doc.is_empty(),
            "{}.{} has no doc comment",
            k.section,
            k.key
        );
    }
    let find = |s: &str, k: &str| keys.iter().find(|i| i.section == s && i.key == k).unwrap();
    assert_eq!(
        find("namenode", "block_size").default.as_deref(),
        Some("\"1MiB\"")
    );
    assert_eq!(find("client", "outstanding").kind, KeyKind::Integer);
    assert_eq!(find("client", "fast_path").kind, KeyKind::Boolean);
    assert_eq!(find("datanode", "tier").kind, KeyKind::Text);
    assert_eq!(find("datanode", "storage_class").default, None);
    assert_eq!(find("client", "busy_poll").env(), "CRAIL_CLIENT_BUSY_POLL");
    assert!(
        keys.iter()
            .all(|k| k.key != "secret" || k.section == "security")
    );
}

/// docs/config.md is generated from the code; `UPDATE_DOCS=1` rewrites it.
#[test]
fn config_md_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/config.md");
    let want = reference_markdown();
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/config.md is stale: run UPDATE_DOCS=1 cargo test -p crail-store config_md"
    );
}
