//! `ociregistry-perf`: pulls images the way a booting cluster does (the puller comes next; this commit
//! holds the pure parts it is built from, with their unit tests).
#![allow(dead_code)]

mod accesslog;
mod chunks;
mod manifest;
mod reference;
mod stats;

fn main() {
    eprintln!("ociregistry-perf: not yet implemented");
    std::process::exit(1);
}
