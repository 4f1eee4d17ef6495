//! What engines link: the client of the node's broadcast service.

pub(crate) mod client;
