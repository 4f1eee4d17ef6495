//! Bytes a server could send: the frame decoder on the client side and the error-reply
//! conversion to typed errors. Must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    crail_store::testing::fuzz_replies(data);
});
