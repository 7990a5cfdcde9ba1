//! `crowd ledger verify`: every tracker replica (or the one tracker) replays
//! its stored ledger log from genesis and signs the head it reaches, and
//! this command replays the log itself, downloaded from a replica that
//! states the head most of them state, with the pure ledger (the same code
//! the tracker runs). It then checks, at one log position:
//!
//! - the downloaded log replays from genesis (every entry re-applied, its
//!   events and hash chain checked) to the head most replicas signed;
//! - every replica signed that head; and
//! - every replica serves that same log, entry by entry (compared by each
//!   entry's chain head, so only one log is replayed).
//!
//! A replica that does not answer, whose own replay fails, that signs
//! another head or serves another history is named, and the command fails.
//! What it cannot catch: a majority that agrees on one false history
//! replays here as the truth. Every replica holds the tracker key (it
//! signs epochs and repair jobs), so what no replica can forge is only the
//! client- and provider-signed requests in a history.

use std::path::Path;

use anyhow::{bail, Result};
use crowd_protocol::libp2p::PeerId;
use crowd_protocol::{HeadStatement, TrackerRequest, TrackerResponse};
use crowd_tracker::{LogEntry, Replayer};

use crate::devnet::tracker::TrackerConn;

/// Each replica's signed head after `upto` entries (its whole log if none).
fn heads(
    conn: &TrackerConn,
    network: &crowd_protocol::NetworkId,
    upto: Option<u64>,
) -> Vec<(PeerId, Result<HeadStatement>)> {
    conn.ask_each(&TrackerRequest::Head { upto })
        .into_iter()
        .map(|(peer, answer)| {
            let statement = match answer {
                Ok(TrackerResponse::Head(signed)) => signed
                    .open(network, Some(&peer))
                    .map(|(_, s)| s)
                    .map_err(|e| anyhow::anyhow!("its head is not signed by it: {e}")),
                Ok(other) => Err(anyhow::anyhow!("unexpected answer {other:?}")),
                Err(e) => Err(e),
            };
            (peer, statement)
        })
        .collect()
}

pub fn verify(home: &Path, json: bool) -> Result<()> {
    let config = crowd_client::config::ClientConfig::load(home)?;
    let addrs = if config.tracker_replicas.is_empty() {
        vec![config.tracker_address.clone()]
    } else {
        config.tracker_replicas.clone()
    };
    let conn = TrackerConn::connect(crowd_client::identity(home)?, &addrs)?;
    let network = conn.info()?.network;
    // every replica's whole log, then all of them at the shortest length
    let whole = heads(&conn, &network, None);
    let Some(upto) = whole
        .iter()
        .filter_map(|(_, h)| h.as_ref().ok())
        .map(|h| h.entries)
        .min()
    else {
        let why: Vec<String> = whole
            .iter()
            .map(|(p, h)| {
                format!(
                    "{p}: {}",
                    h.as_ref().err().map(|e| e.to_string()).unwrap_or_default()
                )
            })
            .collect();
        bail!("no tracker replica's ledger verifies: {}", why.join("; "));
    };
    let at = heads(&conn, &network, Some(upto));
    // the head most replicas state
    let mut counts: Vec<([u8; 32], usize)> = Vec::new();
    for (_, h) in &at {
        if let Ok(h) = h {
            match counts.iter_mut().find(|(head, _)| *head == h.head) {
                Some((_, n)) => *n += 1,
                None => counts.push((h.head, 1)),
            }
        }
    }
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    let agreed = counts.first().map(|(h, _)| *h);
    // replay here a log that reaches it, from the first replica serving one
    let mut served: Vec<(PeerId, String)> = Vec::new();
    let mut reference: Option<(PeerId, Vec<[u8; 32]>)> = None;
    for (peer, h) in &at {
        if !matches!(h, Ok(s) if Some(s.head) == agreed) {
            continue;
        }
        match replay_from(&conn, *peer, &network, upto) {
            Ok((head, chain)) if Some(head) == agreed => {
                reference = Some((*peer, chain));
                break;
            }
            Ok((head, _)) => served.push((
                *peer,
                format!(
                    "signs head {} but the log it serves replays here to {}",
                    hex::encode(agreed.unwrap_or_default()),
                    hex::encode(head)
                ),
            )),
            Err(e) => served.push((*peer, format!("the log it serves does not replay here: {e:#}"))),
        }
    }
    let mut bad = Vec::new();
    let mut rows = Vec::new();
    for (peer, h) in &at {
        let verdict = if let Some((_, why)) = served.iter().find(|(p, _)| p == peer) {
            why.clone()
        } else {
            match (h, &reference) {
                (Err(e), _) => format!("{e:#}"),
                (Ok(s), _) if Some(s.head) != agreed => {
                    format!("states another head {}", hex::encode(s.head))
                }
                (Ok(_), None) => "no replica serves a log that replays to this head".to_string(),
                (Ok(_), Some((from, _))) if from == peer => "agrees".to_string(),
                (Ok(_), Some((_, chain))) => match same_history(&conn, *peer, chain) {
                    Ok(()) => "agrees".to_string(),
                    Err(e) => format!("{e:#}"),
                },
            }
        };
        if verdict != "agrees" {
            bad.push(format!("replica {peer}: {verdict}"));
        }
        rows.push(serde_json::json!({ "peer": peer.to_string(), "verdict": verdict }));
    }
    let replayed_from = reference.as_ref().map(|(p, _)| p.to_string());
    if json {
        println!(
            "{}",
            serde_json::json!({
                "entries": upto,
                "head": agreed.map(hex::encode),
                "replicas": rows,
                "replayed_from": replayed_from,
                "ok": bad.is_empty(),
            })
        );
    }
    if !bad.is_empty() {
        bail!("{}", bad.join("; "));
    }
    if !json {
        println!(
            "ledger ok: {upto} entries, head {}, replayed here from {}'s log, the same on {} tracker replica(s)",
            agreed.map(hex::encode).unwrap_or_default(),
            replayed_from.unwrap_or_default(),
            at.len()
        );
    }
    Ok(())
}

/// One page of `peer`'s stored log from `from`.
fn log_page(conn: &TrackerConn, peer: PeerId, from: u64) -> Result<crowd_protocol::LogPage> {
    match conn.ask_peer(peer, TrackerRequest::Log { from })? {
        TrackerResponse::Log(page) => Ok(page),
        other => bail!("unexpected answer to Log: {other:?}"),
    }
}

/// `peer`'s log entries `0..upto`, each decoded, passed to `each`.
fn each_entry(
    conn: &TrackerConn,
    peer: PeerId,
    upto: u64,
    mut each: impl FnMut(LogEntry) -> Result<()>,
) -> Result<()> {
    let mut next = 0;
    while next < upto {
        let page = log_page(conn, peer, next)?;
        if page.entries.is_empty() {
            bail!("its log ends at entry {next}, before the {upto} it stated");
        }
        for blob in page.entries.iter().take((upto - next) as usize) {
            let entry: LogEntry = crowd_protocol::wire::from_cbor("log entry", &blob.0)?;
            if entry.index != next {
                bail!("it served entry {} where entry {next} belongs", entry.index);
            }
            each(entry)?;
            next += 1;
        }
    }
    Ok(())
}

/// Downloads `peer`'s log up to `upto` entries and replays it here from its
/// genesis (which must be this network's): the head it reaches and the
/// chain head after each entry.
fn replay_from(
    conn: &TrackerConn,
    peer: PeerId,
    network: &crowd_protocol::NetworkId,
    upto: u64,
) -> Result<([u8; 32], Vec<[u8; 32]>)> {
    let first = log_page(conn, peer, 0)?;
    let genesis: crowd_tracker::LedgerConfig = crowd_protocol::wire::from_cbor("genesis", &first.genesis.0)?;
    let mut replayer = Replayer::new(genesis)?;
    if replayer.ledger().network() != *network {
        bail!("its genesis is another network's");
    }
    // `upto` is what the replicas stated: grown as entries arrive, not reserved
    let mut chain = Vec::new();
    each_entry(conn, peer, upto, |entry| {
        replayer.push(&entry)?;
        chain.push(replayer.ledger().head());
        Ok(())
    })?;
    Ok((replayer.finish()?.head(), chain))
}

/// Checks that `peer` serves the log whose chain heads are `chain`.
fn same_history(conn: &TrackerConn, peer: PeerId, chain: &[[u8; 32]]) -> Result<()> {
    each_entry(conn, peer, chain.len() as u64, |entry| {
        let i = entry.index as usize;
        if entry.head() != chain[i] {
            bail!("serves another history from entry {i} on than the log replayed here");
        }
        Ok(())
    })
}
