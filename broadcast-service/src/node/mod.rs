//! What runs on a node (the `node` feature): its copies of variables and its service.

pub(crate) mod cache;
pub mod service;
