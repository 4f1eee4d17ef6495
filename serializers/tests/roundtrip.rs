//! Every serializer round-trips any records through any chunking, and no input (truncated,
//! corrupted or random) makes a decoder panic or read out of bounds.

#![allow(clippy::unwrap_used)]

use crail_serializers::{Error, Serializer};
use proptest::prelude::*;

type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// Encodes `records` whole.
fn encode(ser: &Serializer, records: &Records) -> Vec<u8> {
    let mut enc = ser.encoder();
    let mut out = Vec::new();
    for (k, v) in records {
        enc.push(k, v).unwrap();
        if enc.ready() > 10_000 {
            out.extend(enc.take());
        }
    }
    out.extend(enc.finish().unwrap());
    out
}

/// Decodes `bytes` fed in chunks cut at `cuts` (offsets, any order).
fn decode(ser: &Serializer, bytes: &[u8], cuts: &[usize]) -> Result<Records, Error> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.push(bytes.len());
    cuts.sort_unstable();
    let mut dec = ser.decoder::<Vec<u8>>();
    let mut got = Vec::new();
    let mut at = 0;
    for cut in cuts {
        dec.push(bytes[at..cut].to_vec());
        at = cut;
        while let Some(r) = dec.next_record()? {
            got.push((r.key.to_vec(), r.value.to_vec()));
        }
    }
    dec.finish()?;
    Ok(got)
}

fn kv_records() -> impl Strategy<Value = Records> {
    prop::collection::vec(
        (
            prop::collection::vec(any::<u8>(), 0..40),
            prop::collection::vec(any::<u8>(), 0..300),
        ),
        0..200,
    )
}

fn fixed_records(key: usize, value: usize) -> impl Strategy<Value = Records> {
    prop::collection::vec(
        (
            prop::collection::vec(any::<u8>(), key),
            prop::collection::vec(any::<u8>(), value),
        ),
        0..300,
    )
}

/// Small frames, so a few hundred records make many of them.
fn named(name: &str) -> Serializer {
    Serializer::by_name(name).unwrap().with_frame_size(1024)
}

proptest! {
    #[test]
    fn kv_formats_round_trip_through_any_chunking(
        records in kv_records(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        for name in ["kv", "kv+crc", "kv+lz4", "kv+zstd"] {
            let ser = named(name);
            let bytes = encode(&ser, &records);
            prop_assert_eq!(&decode(&ser, &bytes, &cuts).unwrap(), &records, "{}", name);
        }
    }

    #[test]
    fn fixed_formats_round_trip_through_any_chunking(
        records in fixed_records(10, 90),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        for name in ["fixed:10:90", "fixed:10:90+crc", "fixed:10:90+lz4", "fixed:10:90+zstd"] {
            let ser = named(name);
            let bytes = encode(&ser, &records);
            if name == "fixed:10:90" {
                prop_assert_eq!(bytes.len(), records.len() * 100, "no per-record metadata");
            }
            prop_assert_eq!(&decode(&ser, &bytes, &cuts).unwrap(), &records, "{}", name);
        }
    }

    #[test]
    fn truncated_streams_are_errors(
        records in kv_records(),
        cut in any::<usize>(),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        for name in ["kv", "kv+crc", "kv+lz4", "kv+zstd", "fixed:10:90"] {
            let ser = named(name);
            let records: Records = if name.starts_with("fixed") {
                records.iter().map(|(k, v)| {
                    let mut k = k.clone(); k.resize(10, 0);
                    let mut v = v.clone(); v.resize(90, 1);
                    (k, v)
                }).collect()
            } else {
                records.clone()
            };
            let bytes = encode(&ser, &records);
            if bytes.is_empty() {
                continue;
            }
            let cut = cut % bytes.len();
            match decode(&ser, &bytes[..cut], &cuts) {
                // A cut between records is a valid shorter stream.
                Ok(got) => prop_assert!(got.len() < records.len() || cut == 0, "{}", name),
                Err(e) => prop_assert!(
                    matches!(e, Error::Truncated { .. }),
                    "{}: {}", name, e
                ),
            }
        }
    }

    #[test]
    fn corrupted_frames_never_pass_as_data(
        records in kv_records(),
        at in any::<usize>(),
        flip in 1u8..=255,
    ) {
        prop_assume!(!records.is_empty());
        for name in ["kv+crc", "kv+lz4", "kv+zstd"] {
            let ser = named(name);
            let mut bytes = encode(&ser, &records);
            let at = at % bytes.len();
            bytes[at] ^= flip;
            prop_assert!(decode(&ser, &bytes, &[]).is_err(), "{}: a flip at {} went unseen", name, at);
        }
    }

    #[test]
    fn random_bytes_decode_or_fail_cleanly(
        bytes in prop::collection::vec(any::<u8>(), 0..2000),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        for name in ["kv", "kv+crc", "kv+lz4", "kv+zstd", "fixed:3:5"] {
            let _ = decode(&named(name), &bytes, &cuts);
        }
    }
}

#[test]
fn errors_say_where() {
    let ser = Serializer::by_name("kv").unwrap();
    let mut bytes = encode(&ser, &vec![(b"key".to_vec(), b"value".to_vec()); 3]);
    bytes.truncate(bytes.len() - 2);
    let err = decode(&ser, &bytes, &[5]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Truncated {
                offset: 20,
                have: 8
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "truncated input: the record or frame at offset 20 is incomplete (8 bytes of it present)"
    );
    let fixed = Serializer::by_name("fixed:10:90").unwrap();
    let err = fixed.encoder().push(b"short", b"").unwrap_err();
    assert!(
        err.to_string().contains("does not fit fixed:10:90"),
        "{err}"
    );
}

#[test]
fn compressed_frames_shrink_compressible_records_and_store_the_rest_raw() {
    let records: Records = (0..2000u32)
        .map(|i| {
            (
                i.to_be_bytes().to_vec(),
                b"the same value again and again".to_vec(),
            )
        })
        .collect();
    let raw = encode(&Serializer::by_name("kv").unwrap(), &records);
    let lz4 = encode(&Serializer::by_name("kv+lz4").unwrap(), &records);
    assert!(lz4.len() * 3 < raw.len(), "{} vs {}", lz4.len(), raw.len());
    let zstd = encode(&Serializer::by_name("kv+zstd").unwrap(), &records);
    assert!(zstd.len() < lz4.len(), "{} vs {}", zstd.len(), lz4.len());
    // Incompressible records: stored raw, 16 bytes of header per frame only.
    let noise: Records = (0..500u64)
        .map(|i| {
            (
                i.to_le_bytes().to_vec(),
                (0..100)
                    .map(|j| ((i * 7919 + j * 104_729) % 251) as u8)
                    .collect(),
            )
        })
        .collect();
    let raw = encode(&Serializer::by_name("kv").unwrap(), &noise);
    for name in ["kv+lz4", "kv+zstd"] {
        let framed = encode(&Serializer::by_name(name).unwrap(), &noise);
        assert!(
            framed.len() <= raw.len() + 16 * (raw.len() / 65_536 + 1),
            "{name}"
        );
    }
}
