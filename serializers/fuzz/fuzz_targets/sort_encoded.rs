//! Sorting any bytes as kv records: the records in key order or a typed error, never a panic.
#![no_main]

use crail_serializers::Serializer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Ok(ser) = Serializer::by_name("kv") else {
        return;
    };
    for name in ["radix", "radsort", "comparison"] {
        let Ok(sorter) = crail_sorters::by_name(name) else {
            return;
        };
        if let Ok(sorted) = crail_sorters::sort_encoded(&*sorter, input, &ser) {
            assert_eq!(sorted.len(), input.len(), "{name}");
        }
    }
});
