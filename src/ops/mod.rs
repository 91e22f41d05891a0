//! Ops: the operator's commands over the store's interface (`verify`, `list`,
//! `prune`). `verify` and the `prune` command run instead of a server, owning
//! the image path through [`crate::store::Store`] and its lock; `list` reads
//! beside a server; the prune function itself takes a `&Store`, so a server
//! can run it too. They use only the store's public methods: ops → store →
//! oci. Nothing here serves requests or talks to an upstream.

pub mod criteria;
pub mod list;
pub mod prune;
pub mod verify;
