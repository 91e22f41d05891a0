//! Ops: the operator's commands over the store's interface (`verify`). They
//! run instead of a server, owning the image path through [`crate::store::Store`]
//! and its lock, and use only the store's public methods: ops → store → oci.
//! Nothing here serves requests or talks to an upstream.

pub mod verify;
