//! A blob download shared by every reader who wants that digest. The fetcher
//! writes it to a temp file on a blocking thread, hashing as it goes, and
//! publishes progress through a `watch` channel: bytes available so far, total
//! size once known, and the final state. Readers hold their own handle to the
//! temp file (never the path, so the commit's rename cannot race them) and
//! stream `[0, published)` as it grows. A reader may send the last byte of its
//! response only once the state is `Verified`.

use std::fs::File;
use std::io;
use std::sync::Arc;

use tokio::sync::watch;

use super::error::FetchError;
use crate::oci::Digest;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Waiting for the upstream's response headers.
    Connecting,
    /// Bytes are arriving.
    Streaming,
    /// Every byte is in and the digest checked out.
    Verified,
    /// Nothing will be committed; readers must cut their connection if they
    /// already sent part of a body.
    Failed(FetchError),
}

#[derive(Debug, Clone)]
pub struct Progress {
    /// Bytes written to the temp file and visible to readers.
    pub published: u64,
    /// The blob's size, once the upstream said it.
    pub total: Option<u64>,
    pub state: State,
}

pub struct Download {
    pub digest: Digest,
    /// `registry/repository` this download is fetching from.
    pub source: String,
    file: File,
    progress: watch::Sender<Progress>,
}

impl Download {
    pub fn new(digest: Digest, source: String, file: File) -> Download {
        let (progress, _) = watch::channel(Progress { published: 0, total: None, state: State::Connecting });
        Download { digest, source, file, progress }
    }

    /// A handle on the temp file for one reader. It shares the writer's file
    /// description (and position), so readers must read by offset (`pread`).
    pub fn open_reader(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// A reader's handle: the download plus a subscription that marks the
    /// reader as present (see [`Download::readers`]) for as long as it lives.
    pub fn reader(self: &Arc<Self>) -> Reader {
        Reader { progress: self.subscribe(), download: self.clone() }
    }

    /// How many readers are watching; zero means the download is orphaned.
    pub fn readers(&self) -> usize {
        self.progress.receiver_count()
    }

    pub fn current(&self) -> Progress {
        self.progress.borrow().clone()
    }

    pub(super) fn publish(&self, f: impl FnOnce(&mut Progress)) {
        self.progress.send_modify(f);
    }
}

/// One reader of a download. Created by the fetcher before it answers, so a
/// download never looks orphaned while its requester is on the way.
pub struct Reader {
    pub download: Arc<Download>,
    pub progress: watch::Receiver<Progress>,
}

impl Progress {
    pub fn is_final(&self) -> bool {
        matches!(self.state, State::Verified | State::Failed(_))
    }
}
