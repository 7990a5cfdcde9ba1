//! The network's page: `GET /` on the tracker's HTTP port (config
//! `metrics_address`, 127.0.0.1 by default), its JSON API and the
//! Prometheus text, on one axum server ([`crowd_web::serve`]).
//!
//! | path | what |
//! | --- | --- |
//! | `/` | the page ([`NetworkView`] as HTML; `?part=live` for its live part) |
//! | `/api/v1/network` | [`NetworkView`] as JSON: everything the page shows |
//! | `/api/v1/providers` | its `providers` only (at most 1,024, by peer id; `providers_total` counts all) |
//! | `/metrics` | Prometheus text |
//!
//! The view is built by the ledger's owner thread between two commands
//! ([`super::state::State::network_view`]), so every figure on it is of
//! the same log position (`log_len`, `head`); `crowd-tracker ledger verify
//! --upto LOG_LEN --json` replays the log to that position and prints the
//! same supply, so the page can be checked against the ledger itself.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use crowd_protocol::{Amount, ProviderEntry};
use crowd_web::{amount, bytes, card, grouped, value, PageQuery};
use maud::{html, Markup};
use serde::Serialize;

use super::state::Owner;

/// What the network's page shows.
#[derive(Debug, Clone, Serialize)]
pub struct NetworkView {
    pub tracker: String,
    pub network: String,
    /// The open epoch, its length and the time left in it.
    pub epoch: u64,
    pub epoch_millis: u64,
    pub epoch_ends_in_millis: u64,
    /// The log position this view is of.
    pub log_len: u64,
    pub head: String,
    /// Window proofs of the open epoch so far.
    pub proofs: Proofs,
    /// Settled epochs over every provider's deals: proven (paid), faulted.
    pub proven_epochs: u64,
    pub faulted_epochs: u64,
    pub terminated_deals: u64,
    pub totals: Totals,
    /// Deals in the ledger's state by state name.
    pub deals: BTreeMap<String, u64>,
    /// Ended deals moved out of the state (kept in the store).
    pub archived_deals: u64,
    pub files: u64,
    pub repairs: Repairs,
    /// Providers that take deals (registered, with capacity and enough
    /// collateral per GiB).
    pub providers_total: u64,
    /// The first [`crowd_protocol::tracker::MAX_LIST`] of them by peer id.
    pub providers: Vec<ProviderRow>,
}

/// The open epoch's window proofs.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Proofs {
    /// Active deals challenged in the open epoch.
    pub challenged: u64,
    /// Of those, proven so far.
    pub proven: u64,
}

/// Money, in base units. `minted = available + locked_escrow +
/// locked_collateral + staked + burned + withdrawn` (the ledger's
/// conservation invariant).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Totals {
    pub minted: Amount,
    pub burned: Amount,
    pub withdrawn: Amount,
    pub available: Amount,
    pub locked_escrow: Amount,
    pub locked_collateral: Amount,
    pub staked: Amount,
}

impl Totals {
    /// The ledger's supply and the sums of its accounts.
    pub fn of(ledger: &crate::Ledger) -> Self {
        let supply = ledger.supply();
        let mut t = Totals {
            minted: supply.minted,
            burned: supply.burned,
            withdrawn: supply.withdrawn,
            ..Totals::default()
        };
        for (_, a) in ledger.accounts() {
            t.available = t.available.saturating_add(a.available);
            t.locked_escrow = t.locked_escrow.saturating_add(a.locked_escrow);
            t.locked_collateral = t.locked_collateral.saturating_add(a.locked_collateral);
            t.staked = t.staked.saturating_add(a.staked);
        }
        t
    }
}

/// Repairs over every file.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Repairs {
    /// Lost pieces of live files waiting for a provider.
    pub queued: u64,
    /// Jobs sent and not yet published or failed.
    pub running: u64,
    /// Repair deals published.
    pub done: u64,
    /// Jobs that failed since the tracker started.
    pub failed: u64,
}

/// One registered provider.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProviderRow {
    pub peer: String,
    pub capacity: u64,
    pub used: u64,
    pub price_per_gib_epoch: Amount,
    pub collateral_per_gib: Amount,
    pub staked: Amount,
    pub live_deals: u64,
    pub proven_epochs: u64,
    pub faulted_epochs: u64,
    pub terminated_deals: u64,
    pub score: i128,
}

impl From<ProviderEntry> for ProviderRow {
    fn from(p: ProviderEntry) -> Self {
        Self {
            peer: p.peer.to_string(),
            capacity: p.capacity,
            used: p.used,
            price_per_gib_epoch: p.price_per_gib_epoch,
            collateral_per_gib: p.collateral_per_gib,
            staked: p.staked,
            live_deals: p.live_deals,
            proven_epochs: p.proven_epochs,
            faulted_epochs: p.faulted_epochs,
            terminated_deals: p.terminated_deals,
            score: p.score(),
        }
    }
}

/// Serves the network's page, the API and `/metrics` on `listener`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    owner: Owner,
    registry: Arc<prometheus_client::registry::Registry>,
) -> std::io::Result<()> {
    let router = Router::new()
        .route("/", get(page))
        .route("/api/v1/network", get(api_network))
        .route("/api/v1/providers", get(api_providers))
        .route("/metrics", crowd_web::metrics_route(registry))
        .with_state(owner);
    crowd_web::serve(listener, router).await
}

fn stopped() -> Response {
    crowd_web::error(StatusCode::SERVICE_UNAVAILABLE, "the ledger is stopping")
}

async fn page(State(owner): State<Owner>, Query(q): Query<PageQuery>) -> Response {
    match owner.dashboard().await {
        Ok(v) => {
            let id = format!("tracker {} · network {}", v.tracker, v.network);
            crowd_web::page_or_part(&q, "crowdstore network", &id, render(&v))
        }
        Err(_) => stopped(),
    }
}

async fn api_network(State(owner): State<Owner>) -> Response {
    match owner.dashboard().await {
        Ok(v) => crowd_web::json(&v),
        Err(_) => stopped(),
    }
}

async fn api_providers(State(owner): State<Owner>) -> Response {
    match owner.dashboard().await {
        Ok(v) => crowd_web::json(&v.providers),
        Err(_) => stopped(),
    }
}

/// The page's live part (pure).
pub fn render(v: &NetworkView) -> Markup {
    let t = &v.totals;
    let live: u64 = ["published", "pre-committed", "active"]
        .iter()
        .map(|s| v.deals.get(*s).copied().unwrap_or(0))
        .sum();
    html! {
        section aria-labelledby="h-epoch" {
            h2 #h-epoch { "Epoch" }
            div.cards {
                (card("Current epoch", "epoch", v.epoch, v.epoch))
                (card("Epoch length", "epoch_millis", v.epoch_millis, format!("{:.1} s", v.epoch_millis as f64 / 1000.0)))
                (card("Ends in", "epoch_ends_in_millis", v.epoch_ends_in_millis, format!("{:.1} s", v.epoch_ends_in_millis as f64 / 1000.0)))
                (card("Proofs this epoch", "proofs_proven", v.proofs.proven, format!("{} of {}", v.proofs.proven, v.proofs.challenged)))
                (card("Challenged this epoch", "proofs_challenged", v.proofs.challenged, v.proofs.challenged))
                (card("Ledger entries", "log_len", v.log_len, grouped(u128::from(v.log_len))))
            }
            p.muted.mono { "Head " (v.head) }
        }
        section aria-labelledby="h-money" {
            h2 #h-money { "Supply and escrow" }
            div.cards {
                (card("Minted", "minted", t.minted, amount(t.minted)))
                (card("In accounts, free", "available", t.available, amount(t.available)))
                (card("Client escrow locked", "locked_escrow", t.locked_escrow, amount(t.locked_escrow)))
                (card("Provider collateral locked", "locked_collateral", t.locked_collateral, amount(t.locked_collateral)))
                (card("Provider stakes", "staked", t.staked, amount(t.staked)))
                (card("Burned (slashed)", "burned", t.burned, amount(t.burned)))
                (card("Withdrawn", "withdrawn", t.withdrawn, amount(t.withdrawn)))
            }
        }
        section aria-labelledby="h-deals" {
            h2 #h-deals { "Deals, proofs and faults" }
            div.cards {
                (card("Live deals", "deals_live", live, live))
                (card("Files", "files", v.files, v.files))
                (card("Epochs proven", "proven_epochs", v.proven_epochs, grouped(u128::from(v.proven_epochs))))
                (card("Epochs faulted", "faulted_epochs", v.faulted_epochs, grouped(u128::from(v.faulted_epochs))))
                (card("Deals terminated", "terminated_deals", v.terminated_deals, v.terminated_deals))
                (card("Deals archived", "archived_deals", v.archived_deals, v.archived_deals))
            }
            @if !v.deals.is_empty() {
                p { "By state: "
                    @for (i, (state, n)) in v.deals.iter().enumerate() {
                        @if i > 0 { ", " }
                        (value(&format!("deals.{state}"), n, format!("{n} {state}")))
                    }
                }
            }
        }
        section aria-labelledby="h-repairs" {
            h2 #h-repairs { "Repairs" }
            div.cards {
                (card("Queued", "repairs_queued", v.repairs.queued, v.repairs.queued))
                (card("Running", "repairs_running", v.repairs.running, v.repairs.running))
                (card("Done", "repairs_done", v.repairs.done, v.repairs.done))
                (card("Failed", "repairs_failed", v.repairs.failed, v.repairs.failed))
            }
        }
        section aria-labelledby="h-providers" {
            h2 #h-providers { "Providers" }
            p { (value("providers_total", v.providers_total, grouped(u128::from(v.providers_total)))) " providers take deals"
                @if (v.providers.len() as u64) < v.providers_total { "; the first " (v.providers.len()) " by peer id are listed" } "." }
            @if v.providers.is_empty() {
                p.muted { "No provider has registered yet." }
            } @else {
                div.scroll {
                    table {
                        caption.muted { "Every registered provider; prices and collateral in base units per GiB (per epoch for prices)." }
                        thead { tr {
                            th scope="col" { "Provider" } th.num scope="col" { "Capacity" } th.num scope="col" { "Used" }
                            th.num scope="col" { "Price" } th.num scope="col" { "Collateral" } th.num scope="col" { "Stake" }
                            th.num scope="col" { "Live deals" } th.num scope="col" { "Proven" } th.num scope="col" { "Faulted" }
                            th.num scope="col" { "Terminated" } th.num scope="col" { "Score" }
                        } }
                        tbody {
                            @for p in &v.providers {
                                @let k = |what: &str| format!("provider.{}.{what}", p.peer);
                                tr {
                                    td.mono title=(p.peer) { (crowd_web::short_id(&p.peer)) }
                                    td.num { (value(&k("capacity"), p.capacity, bytes(p.capacity))) }
                                    td.num { (value(&k("used"), p.used, bytes(p.used))) }
                                    td.num { (value(&k("price_per_gib_epoch"), p.price_per_gib_epoch, grouped(p.price_per_gib_epoch))) }
                                    td.num { (value(&k("collateral_per_gib"), p.collateral_per_gib, grouped(p.collateral_per_gib))) }
                                    td.num { (value(&k("staked"), p.staked, grouped(p.staked))) }
                                    td.num { (value(&k("live_deals"), p.live_deals, p.live_deals)) }
                                    td.num { (value(&k("proven_epochs"), p.proven_epochs, p.proven_epochs)) }
                                    td.num { (value(&k("faulted_epochs"), p.faulted_epochs, p.faulted_epochs)) }
                                    td.num { (value(&k("terminated_deals"), p.terminated_deals, p.terminated_deals)) }
                                    td.num { (value(&k("score"), p.score, p.score)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
