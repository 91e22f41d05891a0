//! Pure OCI Distribution types: digests, names, references, media types,
//! platforms and the error body. No I/O and no runtime here; everything is parsed at the edge into
//! these types, so lower layers never see an unchecked string.

pub mod digest;
pub mod error;
pub mod media;
pub mod platform;
pub mod reference;

pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use error::{ErrorBody, OciCode};
pub use media::MediaType;
pub use platform::{EntryPlatform, Platform};
pub use reference::{NameError, Reference, RegistryName, RepoName, Tag};
