//! Framed decoders (+crc, +lz4, +zstd) on any bytes, and on valid frames with bytes changed: a record
//! or a typed error, never a panic, never corrupted data passed as records.
#![no_main]

use crail_serializers::Serializer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&choice, rest)) = input.split_first() else {
        return;
    };
    let name = ["kv+crc", "kv+lz4", "fixed:2:6+lz4", "kv+zstd"][usize::from(choice % 4)];
    let Ok(ser) = Serializer::by_name(name) else {
        return;
    };
    // Raw bytes as they are, and as records framed properly then damaged at one place.
    let _ = drain(&ser, rest, 7 + usize::from(choice) % 100);
    if rest.len() >= 3 {
        let mut enc = ser.encoder();
        for pair in rest.chunks(8) {
            let (k, v) = pair.split_at(2.min(pair.len()));
            let mut value = v.to_vec();
            value.resize(6, 0);
            let _ = enc.push(&[k.first().copied().unwrap_or(0), k.last().copied().unwrap_or(0)], &value);
        }
        let Ok(mut framed) = enc.finish() else {
            return;
        };
        if framed.is_empty() {
            return;
        }
        let at = usize::from(rest[0]) * 257 % framed.len();
        framed[at] ^= rest[1] | 1;
        assert!(
            drain(&ser, &framed, framed.len() / 3 + 1).is_err(),
            "{name}: a changed byte at {at} went unseen"
        );
    }
});

fn drain(ser: &Serializer, bytes: &[u8], chunk: usize) -> Result<usize, ()> {
    let mut dec = ser.decoder::<&[u8]>();
    let mut records = 0;
    for piece in bytes.chunks(chunk) {
        dec.push(piece);
        while let Some(r) = dec.next_record().map_err(|_| ())? {
            std::hint::black_box(r.key.len() + r.value.len());
            records += 1;
        }
    }
    dec.finish().map_err(|_| ())?;
    Ok(records)
}
