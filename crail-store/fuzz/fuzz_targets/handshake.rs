//! Bytes a peer could send in place of a handshake, to a server (with clients' and datanodes'
//! secrets) and to a client: the handshake frames and their bodies. Must never panic or hang.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    crail_store::testing::fuzz_handshake(data);
});
