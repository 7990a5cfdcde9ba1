//! `crowd ledger verify`: every tracker replica (or the one tracker) replays
//! its stored ledger log from genesis and signs the head it reaches; the
//! heads at one log position must be the same. A replica whose log does not
//! replay (tampered or damaged on disk), that does not answer, or whose
//! signed head differs from the others' is named, and the command fails.

use std::path::Path;

use anyhow::{bail, Result};
use crowd_protocol::libp2p::PeerId;
use crowd_protocol::{HeadStatement, TrackerRequest, TrackerResponse};

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
    counts.sort_by(|a, b| b.1.cmp(&a.1));
    let agreed = counts.first().map(|(h, _)| *h);
    let mut bad = Vec::new();
    let mut rows = Vec::new();
    for (peer, h) in &at {
        let verdict = match h {
            Ok(s) if Some(s.head) == agreed => "agrees".to_string(),
            Ok(s) => format!("states another head {}", hex::encode(s.head)),
            Err(e) => format!("{e:#}"),
        };
        if verdict != "agrees" {
            bad.push(format!("replica {peer}: {verdict}"));
        }
        rows.push(serde_json::json!({ "peer": peer.to_string(), "verdict": verdict }));
    }
    if json {
        println!(
            "{}",
            serde_json::json!({
                "entries": upto,
                "head": agreed.map(hex::encode),
                "replicas": rows,
                "ok": bad.is_empty(),
            })
        );
    }
    if !bad.is_empty() {
        bail!("{}", bad.join("; "));
    }
    if !json {
        println!(
            "ledger ok: {upto} entries, head {}, the same on {} tracker replica(s)",
            agreed.map(hex::encode).unwrap_or_default(),
            at.len()
        );
    }
    Ok(())
}
