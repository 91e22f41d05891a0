//! What `verify` shows while it works. When standard error is a terminal, a
//! progress bar there: bytes hashed of the total and objects done of the
//! total. Problem lines go to standard output, printed above the bar; when
//! standard error is not a terminal they are all that is printed.

use std::fmt::Display;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

const TEMPLATE: &str = "{elapsed_precise} [{wide_bar}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left) {msg}";

pub struct Progress {
    /// `None` when standard error is not a terminal.
    bar: Option<ProgressBar>,
    objects: u64,
    done: AtomicU64,
}

impl Progress {
    /// Progress over `objects` objects of `bytes` bytes in all.
    pub fn new(bytes: u64, objects: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let style = ProgressStyle::with_template(TEMPLATE)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            let bar = ProgressBar::with_draw_target(Some(bytes), ProgressDrawTarget::stderr()).with_style(style);
            bar.set_message(format!("0/{objects} objects"));
            bar
        });
        Progress { bar, objects, done: AtomicU64::new(0) }
    }

    /// `bytes` more were hashed.
    pub fn hashed(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    /// One more object is done; `unread` of its bytes were not hashed (it was
    /// missing or of the wrong size), and count as done too.
    pub fn object_done(&self, unread: u64) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(bar) = &self.bar {
            bar.inc(unread);
            bar.set_message(format!("{done}/{} objects", self.objects));
        }
    }

    /// Prints one line to standard output, above the bar. A closed standard
    /// output (`verify | head`) is not an error: the summary is still counted.
    pub fn line(&self, line: impl Display) {
        let print = || drop(writeln!(std::io::stdout().lock(), "{line}"));
        match &self.bar {
            Some(bar) => bar.suspend(print),
            None => print(),
        }
    }

    /// Takes the bar off the terminal.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
