//! Small helpers the daemons share: their log format, the identity key
//! file, the stop signal and the plain-text HTTP endpoint their Prometheus
//! metrics are scraped from.

use std::path::Path;
use std::time::Duration;

use libp2p::identity::Keypair;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

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

/// Installs [`log_subscriber`] on stderr for the process.
pub fn init_logging() {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::util::SubscriberInitExt::try_init(log_subscriber(std::io::stderr, ansi));
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

/// Largest request head read before answering.
const MAX_HTTP_HEAD: usize = 8 * 1024;
/// A client must send its request head within this.
const HTTP_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `GET /metrics` on `listener` with the text `render` returns (the
/// Prometheus text format; `None` answers 500) until the task is dropped.
/// Request heads are bounded in size and time; anything else gets a 404.
pub async fn serve_metrics<F>(listener: TcpListener, render: F)
where
    F: Fn() -> Option<String> + Clone + Send + Sync + 'static,
{
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let render = render.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_HTTP_HEAD];
            let mut n = 0;
            let read = tokio::time::timeout(HTTP_READ_TIMEOUT, async {
                while n < buf.len() {
                    let m = sock.read(&mut buf[n..]).await?;
                    if m == 0 {
                        break;
                    }
                    n += m;
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                return;
            }
            let (status, body) = if buf[..n].starts_with(b"GET /metrics ") {
                match render() {
                    Some(text) => ("200 OK", text),
                    None => ("500 Internal Server Error", "encoding failed\n".into()),
                }
            } else {
                ("404 Not Found", "only /metrics is served\n".into())
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(response.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A peer's string with terminal escapes (set the title, clear the
    /// screen, colour) and a newline reaches the daemons' log escaped, as a
    /// message, a display field and a debug field, with colours or not.
    #[test]
    fn terminal_escapes_from_a_peer_are_logged_escaped() {
        use std::sync::{Arc, Mutex};
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
