//! Unframed record decoders (kv, fixed) on any bytes, fed in chunks of any sizes: a record or
//! a typed error, never a panic.
#![no_main]

use crail_serializers::Serializer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&choice, rest)) = input.split_first() else {
        return;
    };
    let Some((&chunk, bytes)) = rest.split_first() else {
        return;
    };
    let name = ["kv", "fixed:3:5", "fixed:10:90", "fixed:0:1"][usize::from(choice % 4)];
    decode(name, bytes, usize::from(chunk).max(1));
});

fn decode(name: &str, bytes: &[u8], chunk: usize) {
    let Ok(ser) = Serializer::by_name(name) else {
        return;
    };
    let mut dec = ser.decoder::<&[u8]>();
    for piece in bytes.chunks(chunk) {
        dec.push(piece);
        loop {
            match dec.next_record() {
                Ok(Some(r)) => {
                    std::hint::black_box((r.key.len(), r.value.len()));
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = dec.finish();
}
