//! Bytes a client could send a datanode after the handshake (and the attach of staging
//! memory): the frame decoder, write payloads, staging slots, every refusal. Must never panic
//! or hang, and every request gets whole replies.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    crail_store::testing::fuzz_data_requests(data);
});
