//! Progress bars on stderr for long work (hashing, uploads, downloads).
//!
//! A bar is drawn only when stderr is a terminal and the command was not
//! asked for `--json`; otherwise it is hidden and every call on it is a
//! no-op, so callers never branch on it.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Whether bars should be drawn: stderr is a terminal and output is not JSON.
pub fn enabled(json: bool) -> bool {
    !json && std::io::stderr().is_terminal()
}

/// A byte-count bar of `len` bytes labelled `label`, hidden unless [`enabled`].
pub fn bytes(len: u64, label: &str, json: bool) -> ProgressBar {
    if !enabled(json) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:>10} [{bar:32}] {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(label.to_string());
    bar
}

/// A reader that advances `bar` by the bytes read through it.
#[derive(Debug)]
pub struct Reader<R> {
    inner: R,
    bar: ProgressBar,
}

impl<R> Reader<R> {
    pub fn new(inner: R, bar: ProgressBar) -> Self {
        Self { inner, bar }
    }
}

impl<R: std::io::Read> std::io::Read for Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Read;

    #[test]
    fn json_hides_the_bar_and_the_reader_counts_bytes() {
        assert!(!enabled(true));
        let bar = bytes(10, "hashing", true);
        assert!(bar.is_hidden());
        let mut r = Reader::new(&b"0123456789"[..], bar.clone());
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), 10);
        assert_eq!(bar.position(), 10);
    }
}
