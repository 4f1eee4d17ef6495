//! What runs on a node (the `node` feature): the node's writer groups and its service.

pub mod service;
pub(crate) mod slots;
