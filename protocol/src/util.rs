//! Small helpers the daemons share: their log format (and the last errors
//! their dashboards show), the identity key file, the stop signal, and
//! early writeback of large files.

use std::io::Write;
use std::path::Path;
use std::sync::mpsc::{sync_channel, SyncSender};

use libp2p::identity::Keypair;

/// The daemons' log subscriber, writing to `writer`: `RUST_LOG` or the
/// default filter; colours only on a terminal. Peers' strings reach the log
/// (their error replies, addresses, protocol names), so every control
/// character in a message or field value is written escaped (`\u{1b}`),
/// never raw: no terminal escape runs and no newline forges a log line.
/// (tracing-subscriber's own sanitizing escapes the message but not a
/// `%display` field, which is how errors are logged.)
pub fn log_subscriber<W>(writer: W, ansi: bool) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use std::fmt::Write;
    use tracing_subscriber::field::MakeExt;
    let fields = tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        let mut w = Escaped(w);
        match field.name() {
            "message" => write!(w, "{value:?}"),
            name => write!(w, "{name}={value:?}"),
        }
    })
    .delimited(" ");
    tracing_subscriber::fmt()
        .fmt_fields(fields)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,libp2p=warn,libp2p_kad=error")),
        )
        .with_ansi(ansi)
        .with_writer(writer)
        .finish()
}

/// Writes through to `W` with control characters escaped.
struct Escaped<'a, W>(&'a mut W);

impl<W: std::fmt::Write> std::fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for c in s.chars() {
            if c.is_control() {
                write!(self.0, "{}", c.escape_unicode())?;
            } else {
                self.0.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// Installs [`log_subscriber`] on stderr for the process; its warnings and
/// errors are also kept in the returned [`RecentErrors`] (the dashboards'
/// "last errors").
pub fn init_logging() -> RecentErrors {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let recent = RecentErrors::default();
    let writer = Teed {
        inner: std::io::stderr,
        recent: recent.clone(),
    };
    let _ = tracing_subscriber::util::SubscriberInitExt::try_init(log_subscriber(writer, ansi));
    recent
}

/// The last [`RecentErrors::KEEP`] warnings and errors a daemon logged, as
/// its log printed them (escaped; colours removed), oldest first.
#[derive(Debug, Clone, Default)]
pub struct RecentErrors(std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>);

impl RecentErrors {
    /// Lines kept.
    pub const KEEP: usize = 50;
    /// Bytes kept of one line.
    pub const LINE: usize = 1024;

    /// The lines kept, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn push(&self, raw: &[u8]) {
        let line = strip_colours(&String::from_utf8_lossy(raw))
            .trim_end()
            .to_string();
        if line.is_empty() {
            return;
        }
        if let Ok(mut lines) = self.0.lock() {
            if lines.len() == Self::KEEP {
                lines.pop_front();
            }
            lines.push_back(line);
        }
    }
}

/// `text` without ANSI colour sequences (`ESC [ ... letter`).
fn strip_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A log writer that also keeps warnings and errors in a [`RecentErrors`].
#[derive(Debug)]
pub struct Teed<W> {
    pub inner: W,
    pub recent: RecentErrors,
}

impl<'a, W: tracing_subscriber::fmt::MakeWriter<'a>> tracing_subscriber::fmt::MakeWriter<'a> for Teed<W> {
    type Writer = TeedWriter<W::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        TeedWriter {
            inner: self.inner.make_writer(),
            capture: None,
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        TeedWriter {
            inner: self.inner.make_writer_for(meta),
            capture: (*meta.level() <= tracing::Level::WARN).then(|| (self.recent.clone(), Vec::new())),
        }
    }
}

/// One event's writer from [`Teed`]: the line is kept when it is dropped.
#[derive(Debug)]
pub struct TeedWriter<W> {
    inner: W,
    capture: Option<(RecentErrors, Vec<u8>)>,
}

impl<W: std::io::Write> std::io::Write for TeedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some((_, line)) = &mut self.capture {
            let room = RecentErrors::LINE.saturating_sub(line.len());
            line.extend_from_slice(&buf[..n.min(room)]);
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<W> Drop for TeedWriter<W> {
    fn drop(&mut self) {
        if let Some((recent, line)) = self.capture.take() {
            recent.push(&line);
        }
    }
}

/// Reads the libp2p identity key (protobuf encoding) at `path`, or creates an
/// ed25519 one there, readable by the owner only (mode 0600).
pub fn load_or_create_key(path: &Path) -> std::io::Result<Keypair> {
    let at = |what: &str, e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("cannot {what} {}: {e}", path.display()))
    };
    if path.exists() {
        let bytes = std::fs::read(path).map_err(|e| at("read", e))?;
        return Keypair::from_protobuf_encoding(&bytes).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: not a valid identity key: {e}", path.display()),
            )
        });
    }
    let key = Keypair::generate_ed25519();
    let bytes = key
        .to_protobuf_encoding()
        .map_err(|e| std::io::Error::other(format!("encoding key: {e}")))?;
    std::fs::write(path, bytes).map_err(|e| at("write", e))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| at("protect", e))?;
    Ok(key)
}

/// Resolves at the first SIGINT or SIGTERM (Ctrl-C where those cannot be
/// installed): how the daemons know to stop. The handlers are installed when
/// this is called, not when the future is first polled: call it before
/// telling anyone the daemon is ready, or a signal sent in between takes the
/// default action (the process dies with no clean-up).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()));
    async move {
        match handlers {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// Bytes written between two background writebacks.
pub const WRITEBACK_EVERY: u64 = 64 << 20;

/// Writes to a file and, every [`WRITEBACK_EVERY`] bytes, asks a helper
/// thread to `fdatasync` it: the data goes to disk while the transfer goes
/// on, and the final fsync before the rename has only the tail left
/// (RocksDB's `bytes_per_sync` does the same). Without it nothing is written
/// back until the kernel's dirty threshold (10% of memory by default) or the
/// final fsync, which then waits for the whole file. Used by a get's output
/// and by a node receiving a piece. A sync that fails only costs the head
/// start: the final fsync reports the error. Dropping a reporting one
/// waits for the sync in flight and its report.
pub struct Writeback<'f> {
    file: &'f std::fs::File,
    written: u64,
    since: u64,
    tx: Option<SyncSender<u64>>,
    syncer: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Writeback<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writeback")
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

impl<'f> Writeback<'f> {
    pub fn new(file: &'f std::fs::File) -> Self {
        let mut w = Self::reporting(file, |_| {});
        // nothing waits for it (a node drops this on a runtime thread): the
        // helper ends on its own once the writer is dropped
        w.syncer = None;
        w
    }

    /// As [`Writeback::new`], and after each background sync that
    /// succeeded, `synced(n)` runs on the helper thread: the first `n` bytes
    /// written through this writer are on disk. Dropping the writer waits
    /// for the helper (a sync in flight and its report).
    pub fn reporting(file: &'f std::fs::File, mut synced: impl FnMut(u64) + Send + 'static) -> Self {
        let (tx, syncer) = match file.try_clone() {
            Ok(clone) => {
                let (tx, rx) = sync_channel::<u64>(1);
                let syncer = std::thread::spawn(move || {
                    while let Ok(upto) = rx.recv() {
                        if clone.sync_data().is_ok() {
                            synced(upto);
                        }
                    }
                });
                (Some(tx), Some(syncer))
            }
            Err(_) => (None, None),
        };
        Self {
            file,
            written: 0,
            since: 0,
            tx,
            syncer,
        }
    }
}

impl Write for Writeback<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = (&mut &*self.file).write(buf)?;
        self.written += n as u64;
        self.since += n as u64;
        if self.since >= WRITEBACK_EVERY {
            self.since = 0;
            if let Some(tx) = &self.tx {
                // one in flight is enough: the next one covers what this skips
                let _ = tx.try_send(self.written);
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Writeback<'_> {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(syncer) = self.syncer.take() {
            let _ = syncer.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A log writer the test reads back.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Every report names bytes that were written before it, in order, and
    /// by the time the writer is dropped the sync in flight has reported.
    #[test]
    fn writeback_reports_what_each_sync_covered() {
        let file = tempfile::tempfile().unwrap();
        let reports = Arc::new(Mutex::new(Vec::new()));
        let total = 2 * WRITEBACK_EVERY + 5;
        {
            let seen = reports.clone();
            let mut w = Writeback::reporting(&file, move |n| seen.lock().unwrap().push(n));
            let block = vec![3u8; 1 << 20];
            let mut left = total;
            while left > 0 {
                let n = left.min(block.len() as u64) as usize;
                w.write_all(&block[..n]).unwrap();
                left -= n as u64;
            }
        }
        let reports = reports.lock().unwrap().clone();
        assert!(!reports.is_empty(), "no sync reported");
        assert!(reports.windows(2).all(|w| w[0] < w[1]), "{reports:?}");
        assert!(
            reports.iter().all(|&n| n % WRITEBACK_EVERY == 0 && n <= total),
            "{reports:?}"
        );
        assert_eq!(file.metadata().unwrap().len(), total);
    }

    /// Warnings and errors are kept (escaped, without colours, bounded);
    /// info lines are not.
    #[test]
    fn warnings_and_errors_are_kept_for_the_dashboard() {
        let recent = RecentErrors::default();
        let sink = Buffer::default();
        let writer = Teed {
            inner: {
                let s = sink.clone();
                move || s.clone()
            },
            recent: recent.clone(),
        };
        tracing::subscriber::with_default(log_subscriber(writer, true), || {
            tracing::info!("fine");
            tracing::warn!(peer = "p\nq", "slow {}", 1);
            for i in 0..(RecentErrors::KEEP + 3) {
                tracing::error!(i, "disk full");
            }
        });
        let lines = recent.lines();
        assert_eq!(lines.len(), RecentErrors::KEEP);
        assert!(lines.iter().all(|l| !l.contains('\u{1b}') && !l.contains('\n')));
        assert!(
            lines[0].contains("disk full") && lines[0].contains("i=3"),
            "{}",
            lines[0]
        );
        assert!(lines.last().unwrap().contains("ERROR"));
        // the log itself still has everything, in colour
        let all = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(all.contains("fine") && all.contains("slow 1") && all.contains('\u{1b}'));
    }

    /// A peer's string with terminal escapes (set the title, clear the
    /// screen, colour) and a newline reaches the daemons' log escaped, as a
    /// message, a display field and a debug field, with colours or not.
    #[test]
    fn terminal_escapes_from_a_peer_are_logged_escaped() {
        let buffer = Buffer::default();
        let hostile = "\x1b]0;pwned\x07\x1b[2J\u{9b}31m\n2026-01-01T00:00:00Z  INFO forged";
        for ansi in [false, true] {
            let sink = buffer.clone();
            let subscriber = log_subscriber(move || sink.clone(), ansi);
            tracing::subscriber::with_default(subscriber, || {
                tracing::warn!(error = %hostile, reply = ?hostile, "the peer said {hostile}");
            });
            let out = buffer.0.lock().unwrap().clone();
            let text = String::from_utf8_lossy(&out);
            assert!(text.contains("pwned"), "{text}");
            assert!(
                !text.contains("\x1b]0;pwned") && !text.contains("\x1b[2J"),
                "raw escapes logged: {text:?}"
            );
            assert!(!text.contains('\u{9b}') && !text.contains('\x07'), "{text:?}");
            assert_eq!(text.lines().count(), 1, "a forged line: {text:?}");
            buffer.0.lock().unwrap().clear();
        }
    }

    #[test]
    fn a_created_key_loads_back_and_is_private() {
        let dir = std::env::temp_dir().join(format!("crowd-util-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("identity.key");
        let _ = std::fs::remove_file(&path);
        let key = load_or_create_key(&path).unwrap();
        let again = load_or_create_key(&path).unwrap();
        assert_eq!(key.public(), again.public());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::write(&path, b"garbage").unwrap();
        let err = load_or_create_key(&path).unwrap_err().to_string();
        assert!(err.contains("not a valid identity key"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// A command-line parse error as one line: clap's message without its
/// "error: " prefix and usage block, e.g. "unexpected argument '--x' found".
pub fn usage_error_line(clap_text: &str) -> String {
    let message = clap_text.split("Usage:").next().unwrap_or("");
    let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
    match message.trim_start_matches("error: ") {
        "" => "invalid arguments".to_string(),
        m => m.to_string(),
    }
}

/// A config file parser's (multi-line) message as one line: its first line
/// (the position) and its last (the reason).
pub fn parse_error_line(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let first = lines.first().copied().unwrap_or("invalid TOML");
    let last = lines.last().copied().unwrap_or("");
    format!("{first}: {}", last.trim())
}

#[cfg(test)]
mod usage_tests {
    use super::usage_error_line;

    #[test]
    fn usage_errors_are_one_line() {
        let clap = "error: unexpected argument '--x' found\n\n  tip: to pass '--x' as a value, use '-- --x'\n\nUsage: crowd put <FILE>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            usage_error_line(clap),
            "unexpected argument '--x' found tip: to pass '--x' as a value, use '-- --x'"
        );
        assert_eq!(usage_error_line("Usage: crowd"), "invalid arguments");
    }
}
