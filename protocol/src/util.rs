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

/// What direct writes are aligned to: in memory, in the file and in length
/// (the largest logical block size of common devices).
const DIRECT_ALIGN: usize = 4096;
/// A direct writer's buffer: one write per MiB.
const DIRECT_BUF: usize = 1 << 20;

/// Writes to a file and, every [`WRITEBACK_EVERY`] bytes, asks a helper
/// thread to `fdatasync` it: the data goes to disk while the transfer goes
/// on, and the final fsync before the rename has only the tail left
/// (RocksDB's `bytes_per_sync` does the same). Without it nothing is written
/// back until the kernel's dirty threshold (10% of memory by default) or the
/// final fsync, which then waits for the whole file. Used by a get's output
/// and by a node receiving a piece. A sync that fails only costs the head
/// start: the final fsync reports the error. Dropping a reporting one
/// waits for the sync in flight and its report.
///
/// Where the file system allows it and the file position is aligned, the
/// bytes go to the file with `O_DIRECT` through an aligned 1 MiB buffer,
/// bypassing the page cache: on this project's VMs a buffered write into
/// fresh page-cache pages costs several times the CPU of the copy itself
/// (docs/BENCHMARKS.md), and what is written here is not read back soon.
/// [`Write::flush`] writes out what is buffered and must be called before
/// the file is synced; it leaves the file as if written normally (the
/// unaligned tail is written through the page cache, `O_DIRECT` is
/// cleared). Dropping the writer unflushed writes what it holds as well,
/// but cannot report an error.
pub struct Writeback<'f> {
    file: &'f std::fs::File,
    /// Bytes written through to the file.
    written: u64,
    since: u64,
    direct: Option<Direct>,
    tx: Option<SyncSender<u64>>,
    syncer: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Writeback<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writeback")
            .field("written", &self.written)
            .field("direct", &self.direct.is_some())
            .finish_non_exhaustive()
    }
}

/// A fixed-capacity byte buffer that starts on a 4 KiB boundary: whole
/// 4 KiB blocks of it written to a [`Writeback`] that bypasses the page
/// cache go to the file as they are, without a copy into its own buffer.
pub struct AlignedBuf {
    raw: Vec<u8>,
    /// Where the aligned bytes start in `raw`.
    start: usize,
    /// Bytes held.
    len: usize,
    cap: usize,
}

impl AlignedBuf {
    pub fn with_capacity(cap: usize) -> Self {
        let raw = vec![0u8; cap + DIRECT_ALIGN];
        let start = (DIRECT_ALIGN - raw.as_ptr() as usize % DIRECT_ALIGN) % DIRECT_ALIGN;
        Self {
            raw,
            start,
            len: 0,
            cap,
        }
    }

    /// Copies what fits of `bytes`; returns how much.
    pub fn extend(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.cap - self.len);
        let at = self.start + self.len;
        self.raw[at..at + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        n
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    /// The bytes held, to change in place.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }

    /// Keeps the first `len` bytes held (all of them when fewer are held).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Bytes it can hold.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len == self.cap
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Drops the first `n` bytes held, moving the rest to the start.
    fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        self.raw
            .copy_within(self.start + n..self.start + self.len, self.start);
        self.len -= n;
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .field("cap", &self.cap)
            .finish()
    }
}

/// The aligned buffer of a writer whose file is open with `O_DIRECT`.
struct Direct {
    buf: AlignedBuf,
}

impl Direct {
    /// Sets `O_DIRECT` on `file` if its position is aligned and its file
    /// system accepts it.
    #[cfg(target_os = "linux")]
    fn enable(file: &std::fs::File) -> Option<Self> {
        use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
        use std::io::Seek;
        let at = (&mut &*file).stream_position().ok()?;
        if at % DIRECT_ALIGN as u64 != 0 {
            return None;
        }
        let flags = fcntl_getfl(file).ok()?;
        fcntl_setfl(file, flags | OFlags::DIRECT).ok()?;
        Some(Self {
            buf: AlignedBuf::with_capacity(DIRECT_BUF),
        })
    }

    #[cfg(not(target_os = "linux"))]
    fn enable(_: &std::fs::File) -> Option<Self> {
        None
    }

    /// Clears `O_DIRECT` again.
    fn disable(file: &std::fs::File) -> std::io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
            let flags = fcntl_getfl(file)?;
            fcntl_setfl(file, flags - OFlags::DIRECT)?;
        }
        let _ = file;
        Ok(())
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
            direct: Direct::enable(file),
            tx,
            syncer,
        }
    }

    /// Whether the bytes still bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// `n` more bytes are in the file: asks for a sync every
    /// [`WRITEBACK_EVERY`].
    fn advance(&mut self, n: u64) {
        self.written += n;
        self.since += n;
        if self.since >= WRITEBACK_EVERY {
            self.since = 0;
            if let Some(tx) = &self.tx {
                // one in flight is enough: the next one covers what this skips
                let _ = tx.try_send(self.written);
            }
        }
    }

    /// Writes the whole aligned blocks held, with `O_DIRECT`; keeps the rest
    /// at the buffer's start. A short or failed direct write leaves the
    /// file position unknown to alignment: the error is returned, or on a
    /// short write the rest goes through the page cache from then on.
    fn write_held(&mut self) -> std::io::Result<()> {
        let Some(d) = &mut self.direct else { return Ok(()) };
        let whole = d.buf.len() / DIRECT_ALIGN * DIRECT_ALIGN;
        let mut done = 0;
        while done < whole {
            let n = write_some(self.file, &d.buf.as_slice()[done..whole])?;
            done += n;
            if n % DIRECT_ALIGN != 0 {
                break;
            }
        }
        d.buf.consume(done);
        self.advance(done as u64);
        if done < whole {
            self.leave_direct()?;
        }
        Ok(())
    }

    /// Stops bypassing the page cache: clears `O_DIRECT` and writes what is
    /// held normally.
    fn leave_direct(&mut self) -> std::io::Result<()> {
        let Some(d) = self.direct.take() else {
            return Ok(());
        };
        Direct::disable(self.file)?;
        (&mut &*self.file).write_all(d.buf.as_slice())?;
        self.advance(d.buf.len() as u64);
        Ok(())
    }
}

/// One `write` of `bytes` to `file`; writing nothing is an error.
fn write_some(file: &std::fs::File, bytes: &[u8]) -> std::io::Result<usize> {
    match (&mut &*file).write(bytes)? {
        0 => Err(std::io::ErrorKind::WriteZero.into()),
        n => Ok(n),
    }
}

impl Write for Writeback<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // a full buffer goes out before more is taken: an error then
        // consumes nothing of `buf`
        if self.direct.as_ref().is_some_and(|d| d.buf.is_full()) {
            self.write_held()?;
        }
        // a MiB or more of an aligned buffer (an [`AlignedBuf`]'s) goes to
        // the file as it is, when nothing is held before it (smaller writes
        // are gathered: each direct write waits for the disk)
        let whole = buf.len() / DIRECT_ALIGN * DIRECT_ALIGN;
        if whole >= DIRECT_BUF
            && (buf.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN)
            && self.direct.as_ref().is_some_and(|d| d.buf.is_empty())
        {
            let n = write_some(self.file, &buf[..whole])?;
            self.advance(n as u64);
            if n % DIRECT_ALIGN != 0 {
                // the position is no longer aligned: the page cache from now on
                self.leave_direct()?;
            }
            return Ok(n);
        }
        if let Some(d) = &mut self.direct {
            return Ok(d.buf.extend(buf));
        }
        let n = (&mut &*self.file).write(buf)?;
        self.advance(n as u64);
        Ok(n)
    }

    /// Writes out everything held; the file is then as if written normally
    /// (no `O_DIRECT`), ready to be synced.
    fn flush(&mut self) -> std::io::Result<()> {
        self.write_held()?;
        self.leave_direct()
    }
}

impl Drop for Writeback<'_> {
    fn drop(&mut self) {
        // an unflushed writer still leaves its bytes and a normal file
        if self.direct.is_some() && self.flush().is_err() {
            let _ = Direct::disable(self.file);
        }
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

    /// Whatever the sizes of the writes, where in the file the writer
    /// starts and whether it is flushed half-way, the file ends up holding
    /// exactly the bytes written after the ones before; the writer bypassed
    /// the page cache when it started at an aligned position on a file
    /// system that takes `O_DIRECT`; and `O_DIRECT` is off once it is done.
    #[cfg(target_os = "linux")]
    mod direct {
        use super::super::*;
        use proptest::prelude::*;
        use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
        use std::io::{Read, Seek, Write};

        /// Whether the temporary directory's file system takes `O_DIRECT`.
        fn takes_direct() -> bool {
            let f = tempfile::tempfile().unwrap();
            let flags = fcntl_getfl(&f).unwrap();
            fcntl_setfl(&f, flags | OFlags::DIRECT).is_ok()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(32))]
            #[test]
            fn direct_writes_leave_exactly_the_bytes_written(
                before in prop_oneof![Just(0usize), Just(8192), 1usize..10_000],
                sizes in proptest::collection::vec((1usize..400_000, any::<bool>()), 1..8),
                total in 0usize..3_500_000,
                flush_half_way in any::<bool>(),
                seed in any::<u64>(),
            ) {
                let mut file = tempfile::tempfile().unwrap();
                let mut data = vec![0u8; before + total];
                blake3::Hasher::new().update(&seed.to_le_bytes()).finalize_xof().fill(&mut data);
                file.write_all(&data[..before]).unwrap();
                {
                    let mut w = Writeback::new(&file);
                    prop_assert_eq!(w.is_direct(), before % DIRECT_ALIGN == 0 && takes_direct());
                    let mut rest = &data[before..];
                    let mut flushed = false;
                    for (size, aligned) in sizes.iter().cycle() {
                        if rest.is_empty() {
                            break;
                        }
                        if flush_half_way && !flushed && rest.len() <= total / 2 {
                            w.flush().unwrap();
                            flushed = true;
                        }
                        let (now, later) = rest.split_at((*size).min(rest.len()));
                        if *aligned {
                            // from an aligned buffer: whole blocks may go as they are
                            let mut a = AlignedBuf::with_capacity(now.len());
                            prop_assert_eq!(a.extend(now), now.len());
                            w.write_all(a.as_slice()).unwrap();
                        } else {
                            w.write_all(now).unwrap();
                        }
                        rest = later;
                    }
                    w.flush().unwrap();
                    prop_assert!(!w.is_direct());
                }
                prop_assert!(!fcntl_getfl(&file).unwrap().contains(OFlags::DIRECT));
                let mut back = Vec::new();
                file.rewind().unwrap();
                file.read_to_end(&mut back).unwrap();
                prop_assert!(back == data, "{} bytes back, {} written", back.len(), data.len());
            }
        }

        /// A MiB or more of an aligned buffer goes out in one write, not
        /// through the writer's own 1 MiB buffer; less is gathered there.
        #[test]
        fn an_aligned_buffer_is_written_as_it_is() {
            let direct = takes_direct();
            let data: Vec<u8> = (0..(2 * DIRECT_BUF + 100)).map(|i| (i % 249) as u8).collect();
            let mut a = AlignedBuf::with_capacity(data.len());
            assert_eq!(a.extend(&data), data.len());
            assert!(a.is_full() && (a.as_slice().as_ptr() as usize).is_multiple_of(DIRECT_ALIGN));
            let file = tempfile::tempfile().unwrap();
            let mut w = Writeback::new(&file);
            assert_eq!(w.is_direct(), direct);
            let n = w.write(a.as_slice()).unwrap();
            if direct {
                assert_eq!(n, 2 * DIRECT_BUF, "the whole blocks, in one write");
                assert_eq!(file.metadata().unwrap().len(), n as u64, "written, not held");
            }
            w.write_all(&a.as_slice()[n..]).unwrap();
            w.flush().unwrap();
            drop(w);
            let (mut back, mut f) = (Vec::new(), &file);
            f.rewind().unwrap();
            f.read_to_end(&mut back).unwrap();
            assert!(back == data);

            let small_file = tempfile::tempfile().unwrap();
            let mut small = AlignedBuf::with_capacity(8 * DIRECT_ALIGN);
            small.extend(&data[..8 * DIRECT_ALIGN]);
            let mut w = Writeback::new(&small_file);
            assert_eq!(w.write(small.as_slice()).unwrap(), small.len());
            if direct {
                assert_eq!(
                    small_file.metadata().unwrap().len(),
                    0,
                    "held until a MiB is gathered"
                );
            }
            w.flush().unwrap();
            drop(w);
            assert_eq!(small_file.metadata().unwrap().len(), small.len() as u64);
        }

        /// A writer dropped without a flush still leaves every byte and a
        /// file without `O_DIRECT`.
        #[test]
        fn an_unflushed_writer_leaves_its_bytes_when_dropped() {
            let file = tempfile::tempfile().unwrap();
            let data: Vec<u8> = (0..(3 * DIRECT_BUF + 123)).map(|i| (i % 251) as u8).collect();
            {
                let mut w = Writeback::new(&file);
                w.write_all(&data).unwrap();
            }
            assert!(!fcntl_getfl(&file).unwrap().contains(OFlags::DIRECT));
            let (mut back, mut f) = (Vec::new(), &file);
            f.rewind().unwrap();
            f.read_to_end(&mut back).unwrap();
            assert!(back == data);
        }
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
