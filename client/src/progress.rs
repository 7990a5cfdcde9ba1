//! Progress of long work (hashing, uploading, fetching), reported as
//! [`Event`]s to a callback the caller supplies: the `crowd` binary turns
//! them into indicatif bars, a program may log them or ignore them.
//! Without a callback every call is a no-op, so callers never branch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A stage of a put or get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Put: pieces streaming to their providers (the file's one pass).
    Uploading,
    /// Get: pieces streaming in.
    Fetching,
}

impl Stage {
    pub fn label(self) -> &'static str {
        match self {
            Stage::Uploading => "uploading",
            Stage::Fetching => "fetching",
        }
    }
}

/// What a [`Callback`] is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A stage began; `total` bytes expected (it may change with `Advanced`).
    Started { stage: Stage, total: u64 },
    /// `done` of `total` bytes.
    Advanced { stage: Stage, done: u64, total: u64 },
    /// The stage is over.
    Finished { stage: Stage },
    /// Something worth a line to the user (a provider refused, a retry).
    Notice(String),
}

/// Receives progress events (from any thread).
pub type Callback = Arc<dyn Fn(&Event) + Send + Sync>;

#[derive(Clone)]
struct Shared {
    stage: Stage,
    total: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
    callback: Callback,
}

/// One stage's progress (cheap to clone; clones share the counters).
#[derive(Clone, Default)]
pub struct Progress {
    shared: Option<Shared>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.shared {
            None => f.write_str("Progress(hidden)"),
            Some(s) => write!(
                f,
                "Progress({:?}, {}/{})",
                s.stage,
                self.position(),
                s.total.load(Ordering::Relaxed)
            ),
        }
    }
}

impl Progress {
    /// Reports nothing.
    pub fn hidden() -> Self {
        Self { shared: None }
    }

    /// Starts `stage` of `total` bytes on `callback` (none: hidden).
    pub fn start(callback: Option<&Callback>, stage: Stage, total: u64) -> Self {
        let Some(callback) = callback else {
            return Self::hidden();
        };
        callback(&Event::Started { stage, total });
        Self {
            shared: Some(Shared {
                stage,
                total: Arc::new(AtomicU64::new(total)),
                done: Arc::new(AtomicU64::new(0)),
                callback: callback.clone(),
            }),
        }
    }

    fn advanced(&self) {
        if let Some(s) = &self.shared {
            (s.callback)(&Event::Advanced {
                stage: s.stage,
                done: s.done.load(Ordering::Relaxed),
                total: s.total.load(Ordering::Relaxed),
            });
        }
    }

    pub fn inc(&self, n: u64) {
        if let Some(s) = &self.shared {
            s.done.fetch_add(n, Ordering::Relaxed);
            self.advanced();
        }
    }

    pub fn inc_length(&self, n: u64) {
        if let Some(s) = &self.shared {
            s.total.fetch_add(n, Ordering::Relaxed);
            self.advanced();
        }
    }

    pub fn set_length(&self, n: u64) {
        if let Some(s) = &self.shared {
            s.total.store(n, Ordering::Relaxed);
            self.advanced();
        }
    }

    pub fn set_position(&self, n: u64) {
        if let Some(s) = &self.shared {
            s.done.store(n, Ordering::Relaxed);
            self.advanced();
        }
    }

    pub fn position(&self) -> u64 {
        self.shared.as_ref().map_or(0, |s| s.done.load(Ordering::Relaxed))
    }

    pub fn finish_and_clear(&self) {
        if let Some(s) = &self.shared {
            (s.callback)(&Event::Finished { stage: s.stage });
        }
    }

    /// A line for the user.
    pub fn notice(&self, line: String) {
        if let Some(s) = &self.shared {
            (s.callback)(&Event::Notice(line));
        }
    }
}

/// A reader that advances `progress` by the bytes read through it.
#[derive(Debug)]
pub struct Reader<R> {
    inner: R,
    progress: Progress,
}

impl<R> Reader<R> {
    pub fn new(inner: R, progress: Progress) -> Self {
        Self { inner, progress }
    }
}

impl<R: std::io::Read> std::io::Read for Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.inc(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Read;
    use std::sync::Mutex;

    #[test]
    fn events_follow_the_counters_and_no_callback_is_silent() {
        let seen: Arc<Mutex<Vec<Event>>> = Arc::default();
        let log = seen.clone();
        let cb: Callback = Arc::new(move |e: &Event| log.lock().unwrap().push(e.clone()));
        let p = Progress::start(Some(&cb), Stage::Uploading, 10);
        let mut r = Reader::new(&b"0123456789"[..], p.clone());
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(p.position(), 10);
        p.finish_and_clear();
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen[0],
            Event::Started {
                stage: Stage::Uploading,
                total: 10
            }
        );
        assert!(seen.contains(&Event::Advanced {
            stage: Stage::Uploading,
            done: 10,
            total: 10
        }));
        assert_eq!(
            seen.last(),
            Some(&Event::Finished {
                stage: Stage::Uploading
            })
        );
        let hidden = Progress::start(None, Stage::Fetching, 5);
        hidden.inc(3);
        assert_eq!(hidden.position(), 0);
    }
}
