//! Bytes a client could send after the handshake: the frame decoder, then every request
//! handler of a fresh namenode. Must never panic, and every request gets one whole reply.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    crail_store::testing::fuzz_requests(data);
});
