//! Bytes a peer could send on a node-service connection after the handshake: the frame
//! reader, an Open, failures. Must never panic or hang.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    crail_node_service::fuzz_frames(data);
});
