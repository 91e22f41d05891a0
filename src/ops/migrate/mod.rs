//! Importing a Go ociregistry cache in place, so that switching binaries on
//! an existing image path loses nothing. `go_format` reads the Go files,
//! `scan` sorts the Go directories (read only).

pub mod go_format;
pub mod scan;
