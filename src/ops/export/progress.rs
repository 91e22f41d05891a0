//! What `export` shows while it works, as `load` does: result lines (one per
//! image, then the summary) on standard output, or on standard error when the
//! tarball goes to standard output; on a terminal, a bar of the blob bytes
//! written on standard error, with the lines printed above it.

use std::fmt::Display;
use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

const TEMPLATE: &str = "{elapsed_precise} [{wide_bar}] {bytes}/{total_bytes}";

pub struct Progress {
    bar: Option<ProgressBar>,
    /// Lines go to standard error (the tarball is on standard output).
    to_stderr: bool,
}

impl Progress {
    pub fn new(to_stderr: bool) -> Progress {
        Progress { bar: None, to_stderr }
    }

    /// Starts the bar (on a terminal) for `bytes` of blobs.
    pub fn start(&mut self, bytes: u64) {
        if !std::io::stderr().is_terminal() {
            return;
        }
        let style = ProgressStyle::with_template(TEMPLATE)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let bar = ProgressBar::with_draw_target(Some(bytes), ProgressDrawTarget::stderr()).with_style(style);
        self.bar = Some(bar);
    }

    pub fn inc(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    /// A result line. A closed output is not an error.
    pub fn line(&self, line: impl Display) {
        let print = || {
            if self.to_stderr {
                let _ = writeln!(std::io::stderr().lock(), "{line}");
            } else {
                let _ = writeln!(std::io::stdout().lock(), "{line}");
            }
        };
        match &self.bar {
            Some(bar) => bar.suspend(print),
            None => print(),
        }
    }

    /// Takes the bar off the terminal.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
