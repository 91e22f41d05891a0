//! Ops: the operator's commands over the store's interface (`verify`, `list`,
//! `prune`, `load`, `export`, `migrate`). `verify`, `load`, `migrate` and the `prune` command run
//! instead of a server, owning the image path through [`crate::store::Store`]
//! and its lock; `list` and `export` read beside a server; the prune and load functions
//! themselves take a `&Store`, so a server can run them too. They use only
//! the store's public methods: ops → store → oci. Nothing here serves
//! requests; `load` reaches upstreams only through the fetch plane's handle.

pub mod export;
pub mod list;
pub mod load;
pub mod migrate;
pub mod prune;
pub mod verify;
