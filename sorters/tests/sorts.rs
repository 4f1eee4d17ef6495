//! Every sorter agrees with the standard library's stable sort, on fixed-length and
//! variable-length keys, including keys that share long prefixes and keys that are prefixes
//! of others.

#![allow(clippy::unwrap_used)]

use crail_serializers::{Fixed, Serializer};
use crail_sorters::{Keys, by_name, sort_encoded, sort_fixed, sort_fixed_in_place};
use proptest::prelude::*;

const SORTERS: [&str; 3] = ["radix", "radsort", "comparison"];

struct VecKeys(Vec<Vec<u8>>);

impl Keys for VecKeys {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn key(&self, i: usize) -> &[u8] {
        &self.0[i]
    }
}

/// The expected order: std's stable sort of indices by key.
fn expected(keys: &[Vec<u8>]) -> Vec<u32> {
    let mut order: Vec<u32> = (0..keys.len() as u32).collect();
    order.sort_by(|&a, &b| keys[a as usize].cmp(&keys[b as usize]));
    order
}

/// Keys drawn from a small alphabet with a shared stem, so prefixes tie often.
fn keys() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(
        (
            0usize..3,
            prop::collection::vec(prop::sample::select(vec![0u8, 1, 7, 255]), 0..14),
        ),
        0..3000,
    )
    .prop_map(|ks| {
        ks.into_iter()
            .map(|(stem, tail)| {
                let mut k = vec![0xab; stem * 4];
                k.extend(tail);
                k
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_sorter_matches_a_stable_std_sort(keys in keys()) {
        let want = expected(&keys);
        let keys = VecKeys(keys);
        for name in SORTERS {
            prop_assert_eq!(&by_name(name).unwrap().order(&keys), &want, "{}", name);
        }
    }

    #[test]
    fn fixed_records_come_out_sorted_with_their_values(
        raw in prop::collection::vec(any::<u8>(), 0..60_000),
        key in 1usize..12,
    ) {
        let record = key + 5;
        let whole = raw.len() / record * record;
        let data = &raw[..whole];
        let format = Fixed::new(key, 5).unwrap();
        let mut want: Vec<&[u8]> = data.chunks(record).collect();
        want.sort_by(|a, b| a[..key].cmp(&b[..key]));
        let want = want.concat();
        for name in SORTERS {
            let sorter = by_name(name).unwrap();
            let got = sort_fixed(&*sorter, data, &format).unwrap();
            prop_assert!(got == want, "{}", name);
            let mut in_place = data.to_vec();
            let mut scratch = vec![0u8; data.len()];
            sort_fixed_in_place(&*sorter, &mut in_place, &mut scratch, &format).unwrap();
            prop_assert!(in_place == want, "{} in place", name);
        }
    }

    #[test]
    fn in_place_sorts_are_stable_for_keys_of_every_length(
        keys in prop::collection::vec(prop::sample::select(vec![0u8, 1, 64, 65, 200]), 0..4000),
        key in 0usize..4,
    ) {
        // Few distinct keys, so most records tie; the value is the input position.
        let record = key + 4;
        let mut data = Vec::new();
        for (i, chunk) in keys.chunks(key.max(1)).enumerate() {
            let mut k = chunk.to_vec();
            k.resize(key, 0);
            data.extend_from_slice(&k);
            data.extend_from_slice(&(i as u32).to_be_bytes());
        }
        let format = Fixed::new(key, 4).unwrap();
        let mut want: Vec<&[u8]> = data.chunks(record).collect();
        want.sort_by(|a, b| a[..key].cmp(&b[..key]));
        let want = want.concat();
        for name in SORTERS {
            let mut got = data.clone();
            let mut scratch = vec![0u8; data.len()];
            sort_fixed_in_place(&*by_name(name).unwrap(), &mut got, &mut scratch, &format).unwrap();
            prop_assert!(got == want, "{}", name);
        }
    }

    #[test]
    fn kv_records_come_out_sorted(keys in keys()) {
        let ser = Serializer::by_name("kv").unwrap();
        let mut enc = ser.encoder();
        for (i, k) in keys.iter().enumerate() {
            enc.push(k, &(i as u32).to_le_bytes()).unwrap();
        }
        let data = enc.finish().unwrap();
        let mut want_enc = ser.encoder();
        for i in expected(&keys) {
            want_enc.push(&keys[i as usize], &i.to_le_bytes()).unwrap();
        }
        let want = want_enc.finish().unwrap();
        for name in SORTERS {
            let got = sort_encoded(&*by_name(name).unwrap(), &data, &ser).unwrap();
            prop_assert!(got == want, "{}", name);
        }
    }
}

/// A small deterministic random number generator for the large tests.
fn xorshift(mut x: u64) -> impl FnMut() -> u64 {
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    let format = Fixed::new(10, 90).unwrap();
    let radix = by_name("radix").unwrap();
    let err = sort_fixed(&*radix, &[0u8; 150], &format).unwrap_err();
    assert!(err.to_string().contains("offset 100"), "{err}");
    let err = sort_fixed_in_place(&*radix, &mut [0u8; 200], &mut [0u8; 100], &format).unwrap_err();
    assert!(
        err.to_string().contains("scratch buffer of 100 bytes"),
        "{err}"
    );
    let kv = Serializer::by_name("kv").unwrap();
    assert!(sort_encoded(&*radix, &[5, 1, b'a'], &kv).is_err());
    let framed = Serializer::by_name("kv+lz4").unwrap();
    assert!(sort_encoded(&*radix, &[], &framed).is_err());
    assert!(
        by_name("bogo")
            .unwrap_err()
            .to_string()
            .contains("no such sorter")
    );
}

/// Large batches whose keys vary where the radix passes do not look first: in the low prefix
/// bytes only, in few values of the high bytes with random low bytes, and past the prefix.
/// Runs the partial-LSD path and the comparison of long runs at sizes proptest does not reach.
#[test]
fn large_batches_of_skewed_keys_sort_like_std() {
    let mut next = xorshift(0x1234_5678_9abc_def0u64);
    type Shape<'a> = (&'a str, &'a dyn Fn(u64, usize) -> [u8; 16]);
    let shapes: [Shape; 4] = [
        ("low bytes only", &|r, _| {
            let mut k = [0u8; 16];
            k[5..8].copy_from_slice(&r.to_be_bytes()[..3]);
            k
        }),
        ("few high values", &|r, _| {
            let mut k = [0u8; 16];
            k[1] = (r % 3) as u8;
            k[4..12].copy_from_slice(&r.to_be_bytes());
            k
        }),
        ("past the prefix", &|r, _| {
            let mut k = [7u8; 16];
            k[12..16].copy_from_slice(&(r as u32 % 50_000).to_be_bytes());
            k
        }),
        ("uniform", &|r, i| {
            let mut k = [0u8; 16];
            k[..8].copy_from_slice(&r.to_be_bytes());
            k[8..12].copy_from_slice(&(i as u32).to_be_bytes());
            k
        }),
    ];
    let format = Fixed::new(16, 4).unwrap();
    for (shape, make) in shapes {
        let n = 150_000;
        let mut data = Vec::with_capacity(n * 20);
        for i in 0..n {
            data.extend_from_slice(&make(next(), i));
            data.extend_from_slice(&(i as u32).to_be_bytes());
        }
        let mut want: Vec<&[u8]> = data.chunks(20).collect();
        want.sort_by(|a, b| a[..16].cmp(&b[..16]));
        let want = want.concat();
        for name in SORTERS {
            let sorter = by_name(name).unwrap();
            assert!(
                sort_fixed(&*sorter, &data, &format).unwrap() == want,
                "{name}: {shape}"
            );
            let mut got = data.clone();
            let mut scratch = vec![0u8; data.len()];
            sort_fixed_in_place(&*sorter, &mut got, &mut scratch, &format).unwrap();
            assert!(got == want, "{name} in place: {shape}");
        }
    }
}

/// Checks the in-place radix sort of `data` (records of a 12-byte key and a 4-byte value)
/// against std's stable sort.
fn radix_sorts_like_std(data: &[u8]) {
    let format = Fixed::new(12, 4).unwrap();
    let mut want: Vec<&[u8]> = data.chunks(16).collect();
    want.sort_by(|a, b| a[..12].cmp(&b[..12]));
    let want = want.concat();
    let mut got = data.to_vec();
    let mut scratch = vec![0u8; data.len()];
    sort_fixed_in_place(&*by_name("radix").unwrap(), &mut got, &mut scratch, &format).unwrap();
    assert!(got == want);
}

/// Batches large enough that the in-place radix sort's buckets take its two-digit path:
/// random keys whose first four bytes come from 64 Ki values (runs past the digits,
/// ordered by the rest of the key) and whose values are their input positions (stability).
#[test]
fn large_batches_with_long_runs_past_the_digits_sort_stably() {
    let mut next = xorshift(0x9e37_79b9_7f4a_7c15u64);
    let heads: Vec<u32> = (0..65_536).map(|_| next() as u32).collect();
    let n = 600_000;
    let mut data = Vec::with_capacity(n * 16);
    for i in 0..n {
        let r = next();
        data.extend_from_slice(&heads[(r % heads.len() as u64) as usize].to_be_bytes());
        // Eight more key bytes, from few values, so whole keys tie too.
        data.extend_from_slice(&((r >> 32) % 3).to_be_bytes());
        data.extend_from_slice(&(i as u32).to_be_bytes());
    }
    radix_sorts_like_std(&data);
}

/// A range partition's records, as a reduce sorts them: keys sharing their first 7 bits (the
/// radix buckets the bits after those), and a few outliers above and below that the radix's
/// sample of keys misses (every 97th record; they share its first or last bucket with keys of
/// the range).
#[test]
fn keys_sharing_their_first_bits_with_unsampled_outliers_sort_stably() {
    let mut next = xorshift(0x2545_f491_4f6c_dd1du64);
    let n = 400_000;
    let mut data = Vec::with_capacity(n * 16);
    for i in 0..n {
        let r = next();
        let head = match i % 20_011 {
            3 => r >> 1,                           // below the range (first bit 0)
            4 => r | (0x7f << 57),                 // above it (first bits 1111111)
            _ => (r >> 7) | (0b101_1010u64 << 57), // in it
        };
        data.extend_from_slice(&head.to_be_bytes());
        // Few values past the prefix, so whole keys tie too.
        data.extend_from_slice(&((r >> 40) as u32 % 3).to_be_bytes());
        data.extend_from_slice(&(i as u32).to_be_bytes());
    }
    radix_sorts_like_std(&data);
}
