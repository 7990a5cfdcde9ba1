//! The daemons' web dashboards, the parts `crowd-node` and `crowd-tracker`
//! share: the page shell (one stylesheet and one small refresh script, both
//! compiled into the binary: no CDN, nothing fetched from elsewhere), units
//! (GiB, base units, epochs), a server-side SVG bar chart, and the HTTP
//! server (axum) with its bounds.
//!
//! Every number a page shows is a [`value`]: its text for people and its
//! exact figure in `data-value`, keyed by `data-key`, so the browser test
//! compares the page with the JSON API without parsing units back. Pages
//! work without JavaScript; with it, the `#live` part is fetched again
//! (`?part=live`) every 10 s and on the Refresh button.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Router;
use maud::{html, Markup, PreEscaped, DOCTYPE};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

/// The stylesheet every page inlines.
pub const STYLE: &str = include_str!("style.css");
/// The refresh script every page inlines (24 lines, ours).
pub const SCRIPT: &str = include_str!("refresh.js");
/// Requests served at once; more wait for a slot.
pub const MAX_REQUESTS: usize = 32;

/// The query every page takes: `?part=live` answers only the live part.
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    pub part: Option<String>,
}

impl PageQuery {
    /// Whether only the live part was asked for.
    pub fn live_only(&self) -> bool {
        self.part.as_deref() == Some("live")
    }
}

/// A whole page: `title`, a line identifying the daemon, and the live part.
pub fn page(title: &str, id_line: &str, live: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                // no icon to fetch (a browser asks for /favicon.ico otherwise)
                link rel="icon" href="data:,";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    div {
                        h1 { (title) }
                        div.id { (id_line) }
                    }
                    form #refresh method="get" action="" {
                        span #updated .muted role="status" aria-live="polite" {}
                        " "
                        button type="submit" { "Refresh" }
                    }
                }
                main #live { (live) }
                script { (PreEscaped(SCRIPT)) }
            }
        }
    }
}

/// The page, or only its live part when the query asks for it.
/// Any other `part` is a bad request.
pub fn page_or_part(query: &PageQuery, title: &str, id_line: &str, live: Markup) -> Response {
    if let Some(part) = query.part.as_deref().filter(|p| *p != "live") {
        let part: String = part.chars().take(64).filter(|c| !c.is_control()).collect();
        return error(
            StatusCode::BAD_REQUEST,
            &format!("unknown part '{part}': only part=live"),
        );
    }
    if query.live_only() {
        Html(live.into_string()).into_response()
    } else {
        Html(page(title, id_line, live).into_string()).into_response()
    }
}

/// A figure as people read it (`shown`), with its exact value for machines.
pub fn value(key: &str, raw: impl Display, shown: impl Display) -> Markup {
    html! { span.v data-key=(key) data-value=(raw) { (shown) } }
}

/// A labelled card holding one [`value`].
pub fn card(label: &str, key: &str, raw: impl Display, shown: impl Display) -> Markup {
    html! {
        div.card {
            span.label { (label) }
            (value(key, raw, shown))
        }
    }
}

/// `n` bytes in binary units: "512 B", "1.50 GiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.2} {}", UNITS[unit])
}

/// `n` with thousands separators: "1,234,567".
pub fn grouped(n: u128) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// An amount of the network's money (base units, as the ledger counts).
pub fn amount(n: u128) -> String {
    format!("{} units", grouped(n))
}

/// `part` of `whole` in whole per cent (0 when `whole` is 0).
pub fn percent(part: u64, whole: u64) -> u64 {
    match whole {
        0 => 0,
        w => (u128::from(part.min(w)) * 100 / u128::from(w)) as u64,
    }
}

/// A bar chart of one amount per epoch, drawn on the server as SVG (with
/// a text alternative), oldest epoch on the left.
pub fn bar_chart(title: &str, points: &[(u64, u128)]) -> Markup {
    let Some((first, last)) = points.first().zip(points.last()) else {
        return html! { p.muted { "Nothing yet." } };
    };
    let (w, h, left, bottom, top) = (720.0_f64, 200.0_f64, 70.0_f64, 24.0_f64, 12.0_f64);
    let max = points.iter().map(|p| p.1).max().unwrap_or(0).max(1);
    let total = points.iter().fold(0u128, |sum, p| sum.saturating_add(p.1));
    let slot = (w - left - 8.0) / points.len() as f64;
    let label = format!(
        "{title}: {} over epochs {} to {}, at most {} in one epoch",
        amount(total),
        first.0,
        last.0,
        amount(max)
    );
    html! {
        svg.chart viewBox=(format!("0 0 {w} {h}")) role="img" aria-label=(label) xmlns="http://www.w3.org/2000/svg" {
            title { (label) }
            line x1=(left) y1=(h - bottom) x2=(w - 8.0) y2=(h - bottom) stroke="#444" {}
            text x="2" y=(top + 4.0) { (grouped(max)) }
            text x="2" y=(h - bottom) { "0" }
            @for (i, (epoch, v)) in points.iter().enumerate() {
                @let bar = (h - bottom - top) * (*v as f64) / (max as f64);
                rect x=(format!("{:.1}", left + i as f64 * slot + 1.0)) y=(format!("{:.1}", h - bottom - bar))
                    width=(format!("{:.1}", (slot - 2.0).max(1.0))) height=(format!("{bar:.1}")) fill="#0b5cad" {
                    title { "epoch " (epoch) ": " (amount(*v)) }
                }
            }
            text x=(left) y=(h - 6.0) { "epoch " (first.0) }
            text x=(w - 8.0) y=(h - 6.0) text-anchor="end" { "epoch " (last.0) }
        }
    }
}

/// A long identifier (peer id, CID) shortened to its first 8 and last 6
/// characters; the page keeps the whole one in a `title`.
pub fn short_id(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() <= 16 {
        return id.to_string();
    }
    let head: String = chars[..8].iter().collect();
    let tail: String = chars[chars.len() - 6..].iter().collect();
    format!("{head}…{tail}")
}

/// A JSON answer.
pub fn json<T: Serialize>(value: &T) -> Response {
    axum::Json(value).into_response()
}

/// One line, with a status: what every error answer is.
pub fn error(status: StatusCode, line: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{line}\n"),
    )
        .into_response()
}

/// The answer to any path not served.
pub async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not found")
}

/// `GET /metrics`: `registry` in the Prometheus text format.
pub fn metrics_route<S>(registry: Arc<Registry>) -> axum::routing::MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    axum::routing::get(move || {
        let registry = registry.clone();
        async move {
            let mut text = String::new();
            match prometheus_client::encoding::text::encode(&mut text, &registry) {
                Ok(()) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
                Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "encoding the metrics failed"),
            }
        }
    })
}

/// Connections served at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// A connection's whole life: an idle or slow client is cut off after it
/// (a browser simply opens another).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

/// Serves `router` on `listener` until the task is dropped: at most
/// [`MAX_CONNECTIONS`] connections, each for at most
/// [`CONNECTION_LIFETIME`], and [`MAX_REQUESTS`] requests at once; unknown
/// paths get 404.
pub async fn serve(listener: tokio::net::TcpListener, router: Router) -> std::io::Result<()> {
    serve_bounded(listener, router, MAX_CONNECTIONS, CONNECTION_LIFETIME).await
}

/// [`serve`] with other bounds (tests).
pub async fn serve_bounded(
    listener: tokio::net::TcpListener,
    router: Router,
    connections: usize,
    lifetime: Duration,
) -> std::io::Result<()> {
    let app = router
        .fallback(not_found)
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(MAX_REQUESTS));
    let listener = Bounded {
        inner: listener,
        slots: Arc::new(tokio::sync::Semaphore::new(connections)),
        lifetime,
        idle: false,
    };
    axum::serve(listener, app).await
}

/// Serves `router` (with its own fallback) for long transfers: at most
/// `connections` at once, each cut once it has moved no byte in either
/// direction for `idle` (a client that stops reading, or never sends,
/// frees its slot), however long it lives while it moves bytes.
pub async fn serve_idle_bounded(
    listener: tokio::net::TcpListener,
    router: Router,
    connections: usize,
    idle: Duration,
) -> std::io::Result<()> {
    let listener = Bounded {
        inner: listener,
        slots: Arc::new(tokio::sync::Semaphore::new(connections)),
        lifetime: idle,
        idle: true,
    };
    axum::serve(listener, router).await
}

/// A listener that accepts a connection only with a free slot, and gives
/// each a deadline.
struct Bounded {
    inner: tokio::net::TcpListener,
    slots: Arc<tokio::sync::Semaphore>,
    lifetime: Duration,
    /// The deadline moves on with every byte moved.
    idle: bool,
}

impl axum::serve::Listener for Bounded {
    type Io = BoundedIo;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let Ok(slot) = self.slots.clone().acquire_owned().await else {
            // the semaphore is never closed
            return std::future::pending().await;
        };
        let (io, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        let io = BoundedIo {
            io,
            deadline: Box::pin(tokio::time::sleep(self.lifetime)),
            idle: self.idle.then_some(self.lifetime),
            _slot: slot,
        };
        (io, addr)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection that fails its reads and writes once its deadline passed
/// (the deadline wakes a connection waiting to read), holding its slot
/// until dropped.
struct BoundedIo {
    io: tokio::net::TcpStream,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    /// Idle mode: how far the deadline moves on when bytes move.
    idle: Option<Duration>,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl BoundedIo {
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }

    fn moved(&mut self) {
        if let Some(idle) = self.idle {
            self.deadline.as_mut().reset(tokio::time::Instant::now() + idle);
        }
    }
}

fn lifetime_over() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "connection lifetime over")
}

impl tokio::io::AsyncRead for BoundedIo {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.expired(cx) {
            return Poll::Ready(Err(lifetime_over()));
        }
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.moved();
        }
        polled
    }
}

impl tokio::io::AsyncWrite for BoundedIo {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.expired(cx) {
            return Poll::Ready(Err(lifetime_over()));
        }
        let polled = std::pin::Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        polled
    }

    fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.expired(cx) {
            return Poll::Ready(Err(lifetime_over()));
        }
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn units_read_as_people_expect() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.00 KiB");
        assert_eq!(bytes(3 << 29), "1.50 GiB");
        assert_eq!(bytes(u64::MAX), "16.00 EiB");
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(amount(12_000), "12,000 units");
        assert_eq!(percent(1, 3), 33);
        assert_eq!(percent(5, 0), 0);
        assert_eq!(percent(7, 5), 100);
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(
            short_id("12D3KooWGcBpAAFRD9L1XfG91EPkVHCgVvyHuHA4R3mtfrtc5U6a"),
            "12D3KooW…tc5U6a"
        );
    }

    #[test]
    fn values_carry_their_exact_figure_and_text_is_escaped() {
        let v = value("free_bytes", 1536, bytes(1536)).into_string();
        assert_eq!(
            v,
            r#"<span class="v" data-key="free_bytes" data-value="1536">1.50 KiB</span>"#
        );
        let page = page("<t>", "id & co", html! { p { "x" } }).into_string();
        assert!(page.contains("&lt;t&gt;") && page.contains("id &amp; co"));
        assert!(page.starts_with("<!DOCTYPE html>"));
    }

    #[test]
    fn the_chart_has_one_bar_per_epoch_and_a_text_alternative() {
        let svg = bar_chart("Earned", &[(3, 10), (4, 0), (5, 20)]).into_string();
        assert_eq!(svg.matches("<rect").count(), 3);
        assert!(
            svg.contains("aria-label=\"Earned: 30 units over epochs 3 to 5, at most 20 units in one epoch\"")
        );
        assert!(bar_chart("Earned", &[]).into_string().contains("Nothing yet"));
    }

    /// An idle connection is closed at its deadline, freeing its slot: with
    /// one slot, a second client is served only after that.
    #[tokio::test]
    async fn idle_connections_end_and_free_their_slot() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route("/", axum::routing::get(|| async { "hello" }));
        tokio::spawn(serve_bounded(listener, router, 1, Duration::from_millis(300)));
        let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut got = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(20), idle.read_to_end(&mut got)).await;
        assert!(closed.is_ok(), "an idle connection was kept");
        assert!(got.is_empty());
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        client.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(20), client.read_to_string(&mut answer))
            .await
            .unwrap()
            .unwrap();
        assert!(
            answer.starts_with("HTTP/1.0 200") && answer.ends_with("hello"),
            "{answer}"
        );
        let mut nope = tokio::net::TcpStream::connect(addr).await.unwrap();
        nope.write_all(b"GET /nope HTTP/1.0\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        nope.read_to_string(&mut answer).await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.0 404") && answer.ends_with("not found\n"),
            "{answer}"
        );
    }

    proptest! {
        #[test]
        fn grouped_reads_back(n: u128) {
            let g = grouped(n);
            prop_assert_eq!(g.replace(',', "").parse::<u128>().unwrap(), n);
            prop_assert!(g.split(',').skip(1).all(|d| d.len() == 3));
        }

        #[test]
        fn bytes_never_panics_and_names_a_unit(n: u64) {
            let b = bytes(n);
            prop_assert!(b.ends_with('B'));
        }

        #[test]
        fn charts_never_panic(points in proptest::collection::vec((any::<u64>(), any::<u128>()), 0..50)) {
            let svg = bar_chart("t", &points).into_string();
            prop_assert_eq!(svg.matches("<rect").count(), points.len());
        }
    }
}
