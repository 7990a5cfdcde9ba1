//! Small helpers the daemons share: the identity key file, the stop signal
//! and the plain-text HTTP endpoint their Prometheus metrics are scraped from.

use std::path::Path;
use std::time::Duration;

use libp2p::identity::Keypair;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

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
