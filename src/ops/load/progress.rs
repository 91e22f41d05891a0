//! What `load` shows while it works. On a terminal (standard error), one bar
//! per image being loaded (bytes fetched of the bytes it lacks) under an
//! overall bar (images done); result lines are printed above the bars. Not on
//! a terminal, the result lines alone, on standard output. Inside a server
//! (preloading), the result lines go to the log; in an admin job, to the
//! job's lines, with a `done` counter of images done.

use std::fmt::Display;
use std::io::{IsTerminal, Write};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

const IMAGE_TEMPLATE: &str = "  {bytes:>10}/{total_bytes:<10} [{bar:30}] {wide_msg}";
const OVERALL_TEMPLATE: &str = "{elapsed_precise} [{wide_bar}] {pos}/{len} images";

pub enum Progress {
    Terminal { multi: MultiProgress, overall: ProgressBar },
    Plain,
    Log,
    Job(crate::admin::Progress),
}

/// One image's bar (nothing when not on a terminal).
pub struct ImageBar(Option<ProgressBar>);

impl Progress {
    /// Bars when standard error is a terminal, else plain lines.
    pub fn for_cli(images: u64) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress::Plain;
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(OVERALL_TEMPLATE)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let overall = multi.add(ProgressBar::new(images).with_style(style));
        Progress::Terminal { multi, overall }
    }

    /// A bar for one image, titled with its name.
    pub fn image(&self, name: &str) -> ImageBar {
        let Progress::Terminal { multi, overall } = self else { return ImageBar(None) };
        let style = ProgressStyle::with_template(IMAGE_TEMPLATE)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let bar = multi.insert_before(overall, ProgressBar::new(0).with_style(style));
        bar.set_message(name.to_string());
        ImageBar(Some(bar))
    }

    /// One more image is done.
    pub fn image_done(&self) {
        match self {
            Progress::Terminal { overall, .. } => overall.inc(1),
            Progress::Job(job) => job.add("done", 1),
            _ => {}
        }
    }

    /// A result line. A closed standard output is not an error.
    pub fn line(&self, line: impl Display) {
        match self {
            Progress::Terminal { multi, .. } => {
                let _ = multi.suspend(|| writeln!(std::io::stdout().lock(), "{line}"));
            }
            Progress::Plain => drop(writeln!(std::io::stdout().lock(), "{line}")),
            Progress::Log => tracing::info!("{line}"),
            Progress::Job(job) => job.line(line),
        }
    }

    /// A failure line: on the terminal like any line, in the log as a warning.
    pub fn failure(&self, line: impl Display) {
        match self {
            Progress::Log => tracing::warn!("{line}"),
            _ => self.line(line),
        }
    }

    /// Takes the bars off the terminal.
    pub fn finish(&self) {
        if let Progress::Terminal { multi, overall } = self {
            overall.finish_and_clear();
            let _ = multi.clear();
        }
    }
}

impl ImageBar {
    /// `bytes` more are to be fetched for this image.
    pub fn add_total(&self, bytes: u64) {
        if let Some(bar) = &self.0 {
            bar.inc_length(bytes);
        }
    }

    pub fn inc(&self, bytes: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(bytes);
        }
    }
}

impl Drop for ImageBar {
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
