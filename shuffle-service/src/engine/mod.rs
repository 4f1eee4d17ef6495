//! What engines link: the client of the node's service, the map writer, the partition reader
//! and the shuffles' records in the store.

pub(crate) mod client;
pub(crate) mod reader;
pub(crate) mod shuffles;
pub(crate) mod writer;
