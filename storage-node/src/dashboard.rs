//! The operator's dashboard: `GET /` on the node's HTTP port (config
//! `metrics_address`, 127.0.0.1 by default), its JSON API under `/api/v1/`
//! and the Prometheus text at `/metrics`, on one axum server
//! ([`crowd_web::serve`]).
//!
//! | path | what |
//! | --- | --- |
//! | `/` | the page ([`NodeView`] as HTML; `?part=live` for its live part) |
//! | `/api/v1/node` | [`NodeView`] as JSON: everything the page shows |
//! | `/api/v1/deals` | its `deals` only |
//! | `/metrics` | Prometheus text |
//!
//! What the node knows itself (identity, space by kind, sealing queue,
//! repairs, bandwidth, last errors) comes from its store, files and
//! counters; what only the ledger knows (each deal's state, proven and
//! faulted epochs, paid and collateral; the account's balances) is asked
//! of the tracker at each view, within [`TRACKER_WAIT`]. Gathering is
//! separate from drawing: [`gather`] builds the view, [`render`] is a pure
//! function of it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use crowd_protocol::libp2p::PeerId;
use crowd_protocol::tracker::{DealQuery, DealView, TrackerRequest, TrackerResponse};
use crowd_protocol::Response as WireResponse;
use crowd_web::{amount, bytes, card, grouped, value, PageQuery};
use maud::{html, Markup};
use serde::Serialize;

use crate::node::Node;
use crate::records::SealState;

/// How long one view waits for the tracker's answers.
pub const TRACKER_WAIT: Duration = Duration::from_secs(3);
/// Epochs the earnings chart spans (at most the history the ledger keeps per deal, `MAX_HISTORY`).
pub const CHART_EPOCHS: usize = 64;

/// What the dashboard shows: a snapshot of the node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    pub peer_id: String,
    pub addrs: Vec<String>,
    pub version: String,
    pub uptime_secs: u64,
    /// The tracker's open epoch (the latest seen when it did not answer).
    pub epoch: u64,
    /// Whether the tracker answered this view; when not, the ledger's
    /// figures below are absent or zero.
    pub tracker_answered: bool,
    pub space: Space,
    pub sealing: Sealing,
    pub repairs: Repairs,
    pub bandwidth: Bandwidth,
    pub earnings: Earnings,
    pub deals: Vec<DealRow>,
    /// The last warnings and errors logged, oldest first.
    pub errors: Vec<String>,
}

/// Space in bytes.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Space {
    /// What the node offers (config `capacity_bytes`).
    pub capacity_bytes: u64,
    /// Unsealed pieces, replicas and their outboards, as on disk.
    pub used_bytes: u64,
    pub pieces_bytes: u64,
    pub replicas_bytes: u64,
    pub outboards_bytes: u64,
    /// Promised to accepted deals whose bytes have not arrived.
    pub reserved_bytes: u64,
    /// Capacity left: capacity − used − reserved.
    pub free_bytes: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Sealing {
    /// Deals waiting to be sealed, in deal order.
    pub queued: Vec<u64>,
    pub running: u64,
    pub sealed: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Repairs {
    pub running: u64,
    pub done: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Bandwidth {
    /// Piece bytes received in uploads since the start.
    pub received_bytes: u64,
    /// Piece bytes served since the start.
    pub served_bytes: u64,
}

/// Money, in base units, as the ledger has it.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Earnings {
    /// Paid for proven epochs, over the deals listed.
    pub earned: u128,
    /// Free balance of the node's account.
    pub available: u128,
    /// Collateral locked by its deals.
    pub locked_collateral: u128,
    /// Stake locked by its registration.
    pub staked: u128,
    /// Earned per epoch over the last [`CHART_EPOCHS`] epochs, oldest first.
    pub per_epoch: Vec<EpochEarning>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EpochEarning {
    pub epoch: u64,
    pub earned: u128,
}

/// One deal kept here.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DealRow {
    pub id: u64,
    pub piece: String,
    pub piece_bytes: u64,
    /// "queued", "sealed" or "failed: why".
    pub seal: String,
    /// The ledger's view; absent when the tracker did not answer.
    pub ledger: Option<DealLedger>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DealLedger {
    pub client: String,
    /// "published", "active", "completed", ...
    pub state: String,
    pub start_epoch: u64,
    pub end_epoch: u64,
    pub proven_epochs: u64,
    pub faulted_epochs: u64,
    pub paid: u128,
    pub collateral: u128,
    pub price_per_epoch: u128,
}

/// Serves the dashboard, the API and `/metrics` on `listener`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    node: Arc<Node>,
    recent: crowd_protocol::util::RecentErrors,
) -> std::io::Result<()> {
    let registry = Arc::new(node.metrics.registry());
    let ctx = Arc::new(Ctx {
        node,
        recent,
        started: Instant::now(),
    });
    let router = Router::new()
        .route("/", get(page))
        .route("/api/v1/node", get(api_node))
        .route("/api/v1/deals", get(api_deals))
        .route("/metrics", crowd_web::metrics_route(registry))
        .with_state(ctx);
    crowd_web::serve(listener, router).await
}

struct Ctx {
    node: Arc<Node>,
    recent: crowd_protocol::util::RecentErrors,
    started: Instant,
}

async fn page(State(ctx): State<Arc<Ctx>>, Query(q): Query<PageQuery>) -> Response {
    let view = gather(&ctx).await;
    let id = format!("node {}", view.peer_id);
    crowd_web::page_or_part(&q, "crowd-node", &id, render(&view))
}

async fn api_node(State(ctx): State<Arc<Ctx>>) -> Response {
    crowd_web::json(&gather(&ctx).await)
}

async fn api_deals(State(ctx): State<Arc<Ctx>>) -> Response {
    crowd_web::json(&gather(&ctx).await.deals)
}

/// Builds the view: the node's own records, then the tracker's.
async fn gather(ctx: &Ctx) -> NodeView {
    let node = &ctx.node;
    // one read of the deal records serves the deals, the queue and the space
    let deals = crate::records::all_deals(&*node.store).unwrap_or_default();
    let space = node.space_of(&deals).unwrap_or_default();
    let used = space.pieces + space.replicas + space.outboards;
    let reserved = node.reserved_bytes();
    let capacity = node.config.capacity_bytes;
    let m = &node.metrics;
    let mut view = NodeView {
        peer_id: node.peer_id.to_string(),
        addrs: node
            .net
            .listen_addrs()
            .await
            .map(|a| a.iter().map(|a| a.to_string()).collect())
            .unwrap_or_default(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_secs: ctx.started.elapsed().as_secs(),
        epoch: node.last_epoch.load(std::sync::atomic::Ordering::Relaxed),
        tracker_answered: false,
        space: Space {
            capacity_bytes: capacity,
            used_bytes: used,
            pieces_bytes: space.pieces,
            replicas_bytes: space.replicas,
            outboards_bytes: space.outboards,
            reserved_bytes: reserved,
            free_bytes: capacity.saturating_sub(used).saturating_sub(reserved),
        },
        sealing: Sealing {
            queued: deals
                .iter()
                .filter(|(_, d)| d.seal == SealState::Queued)
                .map(|(id, _)| *id)
                .collect(),
            running: u64::try_from(m.seals_running.get()).unwrap_or(0),
            sealed: deals
                .iter()
                .filter(|(_, d)| matches!(d.seal, SealState::Sealed { .. }))
                .count() as u64,
            failed: deals
                .iter()
                .filter(|(_, d)| matches!(d.seal, SealState::Failed(_)))
                .count() as u64,
        },
        repairs: Repairs {
            running: u64::try_from(m.repairs_running.get()).unwrap_or(0),
            done: m.repairs_done.get(),
            failed: m.repairs_failed.get(),
        },
        bandwidth: Bandwidth {
            received_bytes: m.bytes_received.get(),
            served_bytes: m.bytes_served.get(),
        },
        earnings: Earnings::default(),
        deals: deals
            .iter()
            .map(|(id, d)| DealRow {
                id: *id,
                piece: d.piece.to_string(),
                piece_bytes: d.piece_size,
                seal: match &d.seal {
                    SealState::Queued => "queued".into(),
                    SealState::Sealed { .. } => "sealed".into(),
                    SealState::Failed(why) => format!("failed: {why}"),
                },
                ledger: None,
            })
            .collect(),
        errors: ctx.recent.lines(),
    };
    if node.tracker.is_some() {
        let ids: Vec<u64> = deals.iter().map(|d| d.0).collect();
        if let Ok(Ok(ledger)) = tokio::time::timeout(TRACKER_WAIT, ask_ledger(node, ids)).await {
            view.apply_ledger(ledger);
        }
    }
    view
}

/// What the tracker answered for one view.
#[derive(Debug, Clone)]
pub struct LedgerAnswers {
    pub epoch: u64,
    pub account: crowd_protocol::tracker::AccountView,
    pub deals: Vec<DealView>,
}

async fn ask_ledger(node: &Node, ids: Vec<u64>) -> anyhow::Result<LedgerAnswers> {
    let ask = |r| node.ask_tracker(r);
    let epoch = match ask(TrackerRequest::Info).await? {
        WireResponse::Tracker(TrackerResponse::Info(i)) => i.epoch,
        other => anyhow::bail!("unexpected answer to an info query: {other:?}"),
    };
    let account = match ask(TrackerRequest::Account(node.peer_id)).await? {
        WireResponse::Tracker(TrackerResponse::Account(a)) => a,
        other => anyhow::bail!("unexpected answer to an account query: {other:?}"),
    };
    let mut deals = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(crowd_protocol::tracker::MAX_LIST) {
        match ask(TrackerRequest::Deals(DealQuery::Ids(chunk.to_vec()))).await? {
            WireResponse::Tracker(TrackerResponse::Deals(v)) => deals.extend(v),
            other => anyhow::bail!("unexpected answer to a deal query: {other:?}"),
        }
    }
    Ok(LedgerAnswers {
        epoch,
        account,
        deals,
    })
}

impl NodeView {
    /// Fills in what the ledger says (pure: the tracker's answers in, the
    /// view's figures out). Deals of other providers are ignored.
    pub fn apply_ledger(&mut self, answers: LedgerAnswers) {
        let me: Option<PeerId> = self.peer_id.parse().ok();
        let mut per_epoch = std::collections::BTreeMap::<u64, u128>::new();
        let first_chart_epoch = answers.epoch.saturating_sub(CHART_EPOCHS as u64);
        for epoch in first_chart_epoch..answers.epoch {
            per_epoch.insert(epoch, 0);
        }
        let mut earned = 0u128;
        for v in answers.deals {
            if Some(v.proposal.provider) != me {
                continue;
            }
            let Some(row) = self.deals.iter_mut().find(|r| r.id == v.id) else {
                continue;
            };
            earned = earned.saturating_add(v.paid);
            for h in v
                .history
                .iter()
                .filter(|h| h.proven && h.epoch >= first_chart_epoch)
            {
                let e = per_epoch.entry(h.epoch).or_default();
                *e = e.saturating_add(v.proposal.price_per_epoch);
            }
            row.ledger = Some(DealLedger {
                client: v.proposal.client.to_string(),
                state: v.state.clone(),
                start_epoch: v.proposal.start_epoch,
                end_epoch: v.end_epoch,
                proven_epochs: v.proven_epochs,
                faulted_epochs: v.faulted_epochs,
                paid: v.paid,
                collateral: v.collateral,
                price_per_epoch: v.proposal.price_per_epoch,
            });
        }
        self.epoch = answers.epoch;
        self.tracker_answered = true;
        self.earnings = Earnings {
            earned,
            available: answers.account.available,
            locked_collateral: answers.account.locked_collateral,
            staked: answers.account.staked,
            per_epoch: per_epoch
                .into_iter()
                .map(|(epoch, earned)| EpochEarning { epoch, earned })
                .collect(),
        };
    }
}

fn duration(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

/// The page's live part (pure).
pub fn render(v: &NodeView) -> Markup {
    let s = &v.space;
    let used_pct = crowd_web::percent(s.used_bytes + s.reserved_bytes, s.capacity_bytes);
    let chart: Vec<(u64, u128)> = v.earnings.per_epoch.iter().map(|e| (e.epoch, e.earned)).collect();
    html! {
        section aria-labelledby="h-status" {
            h2 #h-status { "Status" }
            div.cards {
                (card("Current epoch", "epoch", v.epoch, v.epoch))
                (card("Up for", "uptime_secs", v.uptime_secs, duration(v.uptime_secs)))
                div.card {
                    span.label { "Tracker" }
                    @if v.tracker_answered { span.v.ok { "answering" } } @else { span.v.bad { "not answering" } }
                }
                (card("Deals", "deals", v.deals.len(), v.deals.len()))
            }
            p.muted.mono { "Listening on: " @for (i, a) in v.addrs.iter().enumerate() { @if i > 0 { ", " } (a) } }
        }
        section aria-labelledby="h-space" {
            h2 #h-space { "Capacity" }
            div.bar role="img" aria-label=(format!("{used_pct}% of capacity used or reserved")) {
                span style=(format!("width: {used_pct}%")) {}
            }
            div.cards {
                (card("Capacity", "capacity_bytes", s.capacity_bytes, bytes(s.capacity_bytes)))
                (card("Used", "used_bytes", s.used_bytes, bytes(s.used_bytes)))
                (card("Unsealed pieces", "pieces_bytes", s.pieces_bytes, bytes(s.pieces_bytes)))
                (card("Sealed replicas", "replicas_bytes", s.replicas_bytes, bytes(s.replicas_bytes)))
                (card("Outboards", "outboards_bytes", s.outboards_bytes, bytes(s.outboards_bytes)))
                (card("Reserved", "reserved_bytes", s.reserved_bytes, bytes(s.reserved_bytes)))
                (card("Free", "free_bytes", s.free_bytes, bytes(s.free_bytes)))
            }
        }
        section aria-labelledby="h-earn" {
            h2 #h-earn { "Earnings" }
            div.cards {
                (card("Earned (deals listed)", "earned", v.earnings.earned, amount(v.earnings.earned)))
                (card("Available balance", "available", v.earnings.available, amount(v.earnings.available)))
                (card("Collateral locked", "locked_collateral", v.earnings.locked_collateral, amount(v.earnings.locked_collateral)))
                (card("Stake", "staked", v.earnings.staked, amount(v.earnings.staked)))
            }
            h3 { "Earned per epoch" }
            (crowd_web::bar_chart("Earned per epoch", &chart))
        }
        section aria-labelledby="h-work" {
            h2 #h-work { "Sealing, repairs and bandwidth" }
            div.cards {
                (card("Seals queued", "seals_queued", v.sealing.queued.len(), v.sealing.queued.len()))
                (card("Sealing now", "seals_running", v.sealing.running, v.sealing.running))
                (card("Sealed deals", "seals_done", v.sealing.sealed, v.sealing.sealed))
                (card("Seals failed", "seals_failed", v.sealing.failed, v.sealing.failed))
                (card("Repairs running", "repairs_running", v.repairs.running, v.repairs.running))
                (card("Repairs done", "repairs_done", v.repairs.done, v.repairs.done))
                (card("Repairs failed", "repairs_failed", v.repairs.failed, v.repairs.failed))
                (card("Received", "received_bytes", v.bandwidth.received_bytes, bytes(v.bandwidth.received_bytes)))
                (card("Served", "served_bytes", v.bandwidth.served_bytes, bytes(v.bandwidth.served_bytes)))
            }
            @if !v.sealing.queued.is_empty() {
                p { "Queue: deals " @for (i, d) in v.sealing.queued.iter().enumerate() { @if i > 0 { ", " } (d) } }
            }
        }
        section aria-labelledby="h-deals" {
            h2 #h-deals { "Deals" }
            @if v.deals.is_empty() {
                p.muted { "No deals yet." }
            } @else {
                div.scroll {
                    table {
                        caption.muted { "Every deal kept here; proven and faulted epochs, paid and collateral as the ledger has them." }
                        thead { tr {
                            th scope="col" { "Deal" } th scope="col" { "Piece" } th.num scope="col" { "Size" }
                            th scope="col" { "Client" } th scope="col" { "Seal" } th scope="col" { "State" }
                            th.num scope="col" { "Epochs" } th.num scope="col" { "Proven" } th.num scope="col" { "Faulted" }
                            th.num scope="col" { "Paid" } th.num scope="col" { "Collateral" }
                        } }
                        tbody {
                            @for d in &v.deals {
                                @let k = |what: &str| format!("deal.{}.{what}", d.id);
                                tr {
                                    td.num { (value(&k("id"), d.id, d.id)) }
                                    td.mono title=(d.piece) { (crowd_web::short_id(&d.piece)) }
                                    td.num { (value(&k("piece_bytes"), d.piece_bytes, bytes(d.piece_bytes))) }
                                    @if let Some(l) = &d.ledger {
                                        td.mono title=(l.client) { (crowd_web::short_id(&l.client)) }
                                        td { (d.seal) }
                                        td { (l.state) }
                                        td.num { (l.start_epoch) "–" (l.end_epoch) }
                                        td.num { (value(&k("proven_epochs"), l.proven_epochs, l.proven_epochs)) }
                                        td.num { (value(&k("faulted_epochs"), l.faulted_epochs, l.faulted_epochs)) }
                                        td.num { (value(&k("paid"), l.paid, grouped(l.paid))) }
                                        td.num { (value(&k("collateral"), l.collateral, grouped(l.collateral))) }
                                    } @else {
                                        td.muted { "?" } td { (d.seal) } td.muted colspan="6" { "the tracker did not answer" }
                                    }
                                }
                            }
                        }
                    }
                }
                p.muted { "Amounts in base units." }
            }
        }
        section aria-labelledby="h-errors" {
            h2 #h-errors { "Last errors" }
            @if v.errors.is_empty() {
                p.muted { "None since the node started." }
            } @else {
                ul.errors.mono { @for e in v.errors.iter().rev() { li { (e) } } }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crowd_protocol::tracker::{AccountView, EpochRecord};
    use crowd_protocol::{DealProposal, PieceId};

    fn view(me: PeerId, deals: &[u64]) -> NodeView {
        NodeView {
            peer_id: me.to_string(),
            addrs: vec![],
            version: "0".into(),
            uptime_secs: 0,
            epoch: 0,
            tracker_answered: false,
            space: Space {
                capacity_bytes: 1 << 30,
                used_bytes: 0,
                pieces_bytes: 0,
                replicas_bytes: 0,
                outboards_bytes: 0,
                reserved_bytes: 0,
                free_bytes: 1 << 30,
            },
            sealing: Sealing {
                queued: vec![],
                running: 0,
                sealed: 0,
                failed: 0,
            },
            repairs: Repairs {
                running: 0,
                done: 0,
                failed: 0,
            },
            bandwidth: Bandwidth {
                received_bytes: 0,
                served_bytes: 0,
            },
            earnings: Earnings::default(),
            deals: deals
                .iter()
                .map(|&id| DealRow {
                    id,
                    piece: "p".into(),
                    piece_bytes: 100,
                    seal: "sealed".into(),
                    ledger: None,
                })
                .collect(),
            errors: vec!["<b>bad</b>".into()],
        }
    }

    fn deal(id: u64, provider: PeerId, price: u128, proven: &[u64], faulted: &[u64]) -> DealView {
        let mut history: Vec<EpochRecord> = proven
            .iter()
            .map(|&epoch| EpochRecord { epoch, proven: true })
            .chain(faulted.iter().map(|&epoch| EpochRecord { epoch, proven: false }))
            .collect();
        history.sort_by_key(|h| h.epoch);
        DealView {
            id,
            proposal_id: [0; 32],
            proposal: DealProposal {
                piece: PieceId([1; 32]),
                piece_size: 100,
                client: PeerId::random(),
                provider,
                price_per_epoch: price,
                start_epoch: 2,
                duration_epochs: 10,
                provider_collateral: 7,
                expiry_epoch: 2,
                nonce: 0,
            },
            published_epoch: 1,
            end_epoch: 12,
            state: "active".into(),
            comm_r: None,
            escrow: 0,
            collateral: 7,
            paid: price * proven.len() as u128,
            proven_epochs: proven.len() as u64,
            faulted_epochs: faulted.len() as u64,
            consecutive_faults: 0,
            history,
        }
    }

    /// The ledger's answers fill the view: each deal's figures, earned per
    /// epoch from the deals' histories (zero where nothing was proven), and
    /// a deal of another provider is not counted.
    #[test]
    fn the_ledger_fills_in_deals_and_earnings_per_epoch() {
        let me = PeerId::random();
        let mut v = view(me, &[1, 2]);
        v.apply_ledger(LedgerAnswers {
            epoch: 6,
            account: AccountView {
                available: 50,
                locked_collateral: 14,
                staked: 3,
                ..AccountView::default()
            },
            deals: vec![
                deal(1, me, 10, &[2, 3, 5], &[4]),
                deal(2, me, 5, &[3], &[]),
                deal(9, PeerId::random(), 1000, &[3], &[]),
            ],
        });
        assert!(v.tracker_answered);
        assert_eq!(v.epoch, 6);
        assert_eq!(v.earnings.earned, 35);
        assert_eq!(
            (
                v.earnings.available,
                v.earnings.locked_collateral,
                v.earnings.staked
            ),
            (50, 14, 3)
        );
        let per: Vec<(u64, u128)> = v.earnings.per_epoch.iter().map(|e| (e.epoch, e.earned)).collect();
        assert_eq!(per, vec![(0, 0), (1, 0), (2, 10), (3, 15), (4, 0), (5, 10)]);
        let l = v.deals[0].ledger.as_ref().unwrap();
        assert_eq!(
            (l.proven_epochs, l.faulted_epochs, l.paid, l.collateral),
            (3, 1, 30, 7)
        );
        // a page of it: the figures are there, a logged string is escaped
        let html = render(&v).into_string();
        assert!(html.contains(r#"data-key="deal.1.paid" data-value="30""#));
        assert!(html.contains(r#"data-key="earned" data-value="35""#));
        assert!(html.contains("&lt;b&gt;bad&lt;/b&gt;") && !html.contains("<b>bad"));
        assert_eq!(html.matches("<rect").count(), 6);
    }

    #[test]
    fn without_the_tracker_the_page_says_so() {
        let v = view(PeerId::random(), &[4]);
        let html = render(&v).into_string();
        assert!(html.contains("not answering") && html.contains("the tracker did not answer"));
    }
}
