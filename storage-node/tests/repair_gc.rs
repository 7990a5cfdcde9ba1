//! Repair jobs and garbage collection on real `crowd-node` processes: source
//! nodes hold pieces uploaded by an in-process client, and an in-process
//! fake tracker (a swarm with the tracker's key) sends repair jobs and seal
//! tickets and answers the nodes' `Info` and `Deals` queries.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

mod common;

use common::{eventually, metric, random_bytes, FakeTracker, TestClient, TestNode, NET};
use crowd_erasure::Layout;
use crowd_protocol::libp2p::identity::Keypair;
use crowd_protocol::libp2p::PeerId;
use crowd_protocol::tracker::SealReport;
use crowd_protocol::{
    BadSource, Blob, DealProposal, PieceId, RepairJob, RepairReport, RepairSource, Request, Response,
    SealTicket, Signed, UploadResult, WindowChallenge,
};

const SPACE: &str = "crowd_node_space_used_bytes";

/// A file erasure-coded 2 + 2 in 64 KiB segments (so a repair streams
/// several segments): its layout, pieces and manifest bytes.
struct CodedFile {
    layout: Layout,
    pieces: Vec<Vec<u8>>,
    manifest: Vec<u8>,
}

fn coded_file(len: usize, seed: u64) -> CodedFile {
    let data = random_bytes(len, seed);
    let encoder = crowd_erasure::Encoder::new(crowd_erasure::Params::new(2, 2, 64 * 1024).unwrap()).unwrap();
    let (layout, pieces) = encoder.encode_bytes(&data).unwrap();
    let provider = PeerId::random().to_string();
    let manifest = crowd_protocol::Manifest {
        version: crowd_protocol::MANIFEST_VERSION,
        root: layout.piece_cid(0).unwrap(),
        size: len as u64,
        chunking: crowd_protocol::Chunking {
            chunker: "fixed".into(),
            chunk_size: 1 << 20,
            max_links: 1024,
            hash: "blake3".into(),
        },
        layout: layout.clone(),
        pieces: (0..4)
            .map(|i| crowd_protocol::ManifestPiece {
                index: i,
                piece: layout.piece_cid(i as usize).unwrap(),
                provider: provider.clone(),
                deal_id: i,
            })
            .collect(),
        encryption: None,
    };
    CodedFile {
        layout,
        pieces,
        manifest: manifest.encode().unwrap(),
    }
}

fn piece_id(bytes: &[u8]) -> PieceId {
    PieceId(*blake3::hash(bytes).as_bytes())
}

/// Uploads piece `index` of `file` to `node` and returns it as a repair source.
async fn hold(client: &TestClient, node: &TestNode, file: &CodedFile, index: usize) -> RepairSource {
    client.connect(node).await;
    let piece = &file.pieces[index];
    let proposal = client.deal(node, piece, index as u64).await;
    assert!(matches!(
        client.upload(node, proposal, piece).await,
        UploadResult::Stored(_)
    ));
    RepairSource {
        index: index as u64,
        piece: piece_id(piece),
        provider: node.peer,
        addrs: node.addrs.iter().map(|a| a.to_string()).collect(),
    }
}

fn repair_proposal(file: &CodedFile, index: usize, provider: PeerId, expiry: u64) -> DealProposal {
    DealProposal {
        piece: piece_id(&file.pieces[index]),
        piece_size: file.layout.piece_len(),
        client: PeerId::random(),
        provider,
        price_per_epoch: 1_000_000,
        // after the fake tracker's epochs here: a stored repair whose deal
        // never comes is deleted at its start
        start_epoch: 2000,
        duration_epochs: 100,
        provider_collateral: 0,
        expiry_epoch: expiry,
        nonce: index as u64,
    }
}

fn job(
    signer: &Keypair,
    file: &CodedFile,
    index: usize,
    target: &TestNode,
    sources: &[RepairSource],
) -> Signed<RepairJob> {
    let body = RepairJob {
        file_id: 1,
        index: index as u64,
        manifest: *blake3::hash(&file.manifest).as_bytes(),
        proposal: repair_proposal(file, index, target.peer, 1000),
        sources: sources.to_vec(),
    };
    Signed::sign(signer, &NET, &body).unwrap()
}

async fn send_repair(
    net: &crowd_protocol::Network,
    target: &TestNode,
    job: &Signed<RepairJob>,
    manifest: &[u8],
) -> Response {
    net.request(
        target.peer,
        Request::Repair {
            job: job.clone(),
            manifest: Blob(manifest.to_vec()),
        },
    )
    .await
    .unwrap()
}

fn expect_error(r: Response, needle: &str) {
    match r {
        Response::Error { message } => {
            assert!(message.contains(needle), "{message:?} lacks {needle:?}");
            assert_eq!(message.lines().count(), 1, "{message}");
        }
        other => panic!("expected an error containing {needle:?}, got {other:?}"),
    }
}

/// Polls RepairStatus until the job is no longer running.
async fn finished(tracker: &FakeTracker, target: &TestNode, id: [u8; 32]) -> RepairReport {
    eventually(120, || async {
        match tracker.ask(target, Request::RepairStatus(id)).await {
            Response::RepairStatus(RepairReport::Running) => None,
            Response::RepairStatus(r) => Some(r),
            other => panic!("{other:?}"),
        }
    })
    .await
}

fn piece_file(node: &TestNode, piece: &[u8]) -> Option<Vec<u8>> {
    let hex: String = blake3::hash(piece)
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::read(node.path("pieces").join(hex)).ok()
}

/// Bytes of every file under pieces/ and replicas/.
fn bytes_on_disk(node: &TestNode) -> i64 {
    ["pieces", "replicas"]
        .iter()
        .flat_map(|d| std::fs::read_dir(node.path(d)).unwrap())
        .map(|e| e.unwrap().metadata().unwrap().len() as i64)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_jobs_that_are_not_valid_are_refused_with_one_line() {
    let tracker = FakeTracker::start().await;
    let file = coded_file(150_000, 1);
    let target = tracker.node("").await;
    let client = TestClient::start().await;
    let sources: Vec<RepairSource> = (1..3)
        .map(|i| RepairSource {
            index: i,
            piece: piece_id(&file.pieces[i as usize]),
            provider: PeerId::random(),
            addrs: vec![],
        })
        .collect();
    let good = job(&tracker.key, &file, 0, &target, &sources);

    // not signed by the tracker
    let forged = job(&client.key, &file, 0, &target, &sources);
    expect_error(
        send_repair(&tracker.net, &target, &forged, &file.manifest).await,
        "signed by",
    );
    // signed by the tracker, sent by someone else
    client.connect(&target).await;
    expect_error(
        send_repair(&client.net, &target, &good, &file.manifest).await,
        "only the tracker",
    );
    // another provider's job
    let mut other = good.open(&NET, None).unwrap().1;
    other.proposal.provider = PeerId::random();
    let other = Signed::sign(&tracker.key, &NET, &other).unwrap();
    expect_error(
        send_repair(&tracker.net, &target, &other, &file.manifest).await,
        "not this node",
    );
    // manifest bytes that are not the job's
    let mut wrong = file.manifest.clone();
    wrong.push(0);
    expect_error(send_repair(&tracker.net, &target, &good, &wrong).await, "digest");
    // an index outside the layout
    let mut body = good.open(&NET, None).unwrap().1;
    body.index = 9;
    let out = Signed::sign(&tracker.key, &NET, &body).unwrap();
    expect_error(
        send_repair(&tracker.net, &target, &out, &file.manifest).await,
        "outside",
    );
    // a proposal whose piece is not the manifest's at that index
    let mut body = good.open(&NET, None).unwrap().1;
    body.proposal.piece = piece_id(b"something else");
    let mismatch = Signed::sign(&tracker.key, &NET, &body).unwrap();
    expect_error(
        send_repair(&tracker.net, &target, &mismatch, &file.manifest).await,
        "is not piece 0",
    );
    // fewer than k sources
    let few = job(&tracker.key, &file, 0, &target, &sources[..1]);
    expect_error(
        send_repair(&tracker.net, &target, &few, &file.manifest).await,
        "usable sources",
    );
    // past its expiry: the tracker is at epoch 1001, the job expired at 1000
    tracker.set_epoch(1001);
    expect_error(
        send_repair(&tracker.net, &target, &good, &file.manifest).await,
        "expired",
    );
    // none of them left a job behind
    match tracker.ask(&target, Request::RepairStatus(good.id())).await {
        Response::RepairStatus(RepairReport::Unknown) => {}
        other => panic!("{other:?}"),
    }
    // and only the tracker may ask about jobs
    let r = client
        .net
        .request(target.peer, Request::RepairStatus(good.id()))
        .await
        .unwrap();
    expect_error(r, "only the tracker");
    assert!(target.files_in("pieces").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_of_a_piece_already_held_is_refused_and_the_piece_untouched() {
    let tracker = FakeTracker::start().await;
    let file = coded_file(150_000, 2);
    let target = tracker.node("").await;
    let source = tracker.node("").await;
    let client = TestClient::start().await;
    // the target already holds piece 0 (uploaded by a client), a source holds 1 and 2
    hold(&client, &target, &file, 0).await;
    let sources = vec![
        hold(&client, &source, &file, 1).await,
        hold(&client, &source, &file, 2).await,
    ];
    let before = piece_file(&target, &file.pieces[0]).unwrap();
    let space = metric(&target.scrape(), SPACE);
    assert!(
        space > file.pieces[0].len() as i64,
        "piece and outboard count: {space}"
    );

    let j = job(&tracker.key, &file, 0, &target, &sources);
    expect_error(
        send_repair(&tracker.net, &target, &j, &file.manifest).await,
        "already held",
    );
    match tracker.ask(&target, Request::RepairStatus(j.id())).await {
        Response::RepairStatus(RepairReport::Unknown) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(piece_file(&target, &file.pieces[0]).unwrap(), before);
    assert_eq!(before, file.pieces[0]);
    assert_eq!(metric(&target.scrape(), SPACE), space);
    assert_eq!(
        client
            .fetch(&target, &file.pieces[0], 0, file.pieces[0].len() as u64)
            .await
            .unwrap(),
        file.pieces[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_from_k_sources_stores_the_piece_and_it_seals() {
    let tracker = FakeTracker::start().await;
    let file = coded_file(300_000, 3);
    let (a, b) = (tracker.node("").await, tracker.node("").await);
    let target = tracker.node("").await;
    let client = TestClient::start().await;
    // exactly k = 2 sources: a data piece and a parity piece (so a rebuild
    // needs Reed-Solomon, not a copy)
    let sources = vec![
        hold(&client, &a, &file, 1).await,
        hold(&client, &b, &file, 3).await,
    ];
    let space_before = metric(&target.scrape(), SPACE);
    assert_eq!(space_before, 0);

    let j = job(&tracker.key, &file, 0, &target, &sources);
    let id = j.id();
    assert_eq!(
        send_repair(&tracker.net, &target, &j, &file.manifest).await,
        Response::RepairQueued
    );
    // re-sending the same job is a duplicate, not a second run
    assert_eq!(
        send_repair(&tracker.net, &target, &j, &file.manifest).await,
        Response::RepairQueued
    );
    let RepairReport::Ready {
        acceptance,
        bad_sources,
    } = finished(&tracker, &target, id).await
    else {
        panic!("repair did not succeed")
    };
    let (_, acc) = acceptance.open(&NET, Some(&target.peer)).unwrap();
    assert_eq!(acc.proposal, id);
    assert!(bad_sources.is_empty(), "{bad_sources:?}");
    assert_eq!(
        send_repair(&tracker.net, &target, &j, &file.manifest).await,
        Response::RepairQueued
    );
    // stored as piece 0 exactly, with its outboard, verified by a fetch
    assert_eq!(piece_file(&target, &file.pieces[0]).unwrap(), file.pieces[0]);
    assert_eq!(target.files_in("pieces").len(), 2);
    assert!(target.files_in("tmp").is_empty());
    client.connect(&target).await;
    assert_eq!(
        client
            .fetch(&target, &file.pieces[0], 0, file.pieces[0].len() as u64)
            .await
            .unwrap(),
        file.pieces[0]
    );
    assert_eq!(metric(&target.scrape(), SPACE), bytes_on_disk(&target));
    let metrics = target.scrape();
    assert_eq!(metric(&metrics, "crowd_node_repairs_done_total"), 1, "{metrics}");

    // the tracker publishes the repair deal and seals it like an uploaded piece
    let (deal_id, ticket) = (77, [5u8; 32]);
    let t = Signed::sign(
        &tracker.key,
        &NET,
        &SealTicket {
            proposal: id,
            deal_id,
            ticket,
        },
    )
    .unwrap();
    assert_eq!(
        tracker.ask(&target, Request::StartSeal(t)).await,
        Response::SealQueued
    );
    let commitment = eventually(120, || async {
        match tracker.ask(&target, Request::SealStatus(deal_id)).await {
            Response::SealStatus(SealReport::Sealed(c)) => Some(c),
            Response::SealStatus(SealReport::Queued) => None,
            other => panic!("{other:?}"),
        }
    })
    .await;
    let (_, c) = commitment.open(&NET, Some(&target.peer)).unwrap();
    assert_eq!(c.piece, piece_id(&file.pieces[0]));
    let provider = crowd_node::node::provider_hash(&target.peer);
    assert_eq!(
        c.replica_id,
        crowd_porep::seal::replica_id(&provider, &c.piece.0, deal_id, &ticket)
    );
    let randomness = [3u8; 32];
    let challenge = Signed::sign(
        &tracker.key,
        &NET,
        &WindowChallenge {
            deal_id,
            epoch: 2,
            randomness,
        },
    )
    .unwrap();
    let Response::WindowProof(w) = tracker.ask(&target, Request::Challenge(challenge)).await else {
        panic!("no window proof")
    };
    let (_, w) = w.open(&NET, Some(&target.peer)).unwrap();
    let public = crowd_porep::WindowPublic {
        piece_len: file.pieces[0].len() as u64,
        comm_r: c.comm_r,
        deal_id,
        epoch: 2,
        randomness,
    };
    let proof = crowd_porep::WindowProof::decode(&w.proof).unwrap();
    crowd_porep::proof::verify_window(&public, &crowd_porep::SealParams::devnet(), &proof).unwrap();
    // the replica counts too
    assert_eq!(metric(&target.scrape(), SPACE), bytes_on_disk(&target));
    assert!(metric(&target.scrape(), SPACE) > 2 * file.pieces[0].len() as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_skips_a_source_with_corrupt_bytes_and_names_it() {
    let tracker = FakeTracker::start().await;
    let file = coded_file(300_000, 4);
    let (a, b, c) = (
        tracker.node("").await,
        tracker.node("").await,
        tracker.node("").await,
    );
    let target = tracker.node("").await;
    let client = TestClient::start().await;
    let sources = vec![
        hold(&client, &a, &file, 1).await,
        hold(&client, &b, &file, 2).await,
        hold(&client, &c, &file, 3).await,
    ];
    // a's copy of piece 1 goes bad on disk: it serves bytes that fail verification
    {
        use std::os::unix::fs::FileExt;
        let hex: String = blake3::hash(&file.pieces[1])
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(a.path("pieces").join(hex))
            .unwrap();
        f.write_all_at(&[file.pieces[1][100] ^ 0xff], 100).unwrap();
    }

    // piece 1 is the decoder's first choice; a's bytes fail, so 2 and 3 are used
    let j = job(&tracker.key, &file, 0, &target, &sources);
    assert_eq!(
        send_repair(&tracker.net, &target, &j, &file.manifest).await,
        Response::RepairQueued
    );
    // the one 16 KiB group holding byte 100 is named, for the tracker to check
    let named = vec![BadSource {
        index: 1,
        provider: a.peer,
        offset: 0,
    }];
    match finished(&tracker, &target, j.id()).await {
        RepairReport::Ready { bad_sources, .. } => assert_eq!(bad_sources, named),
        other => panic!("{other:?}"),
    }
    assert_eq!(piece_file(&target, &file.pieces[0]).unwrap(), file.pieces[0]);

    // with only a and b there are not k good sources: the job fails, names a,
    // and leaves nothing of piece 3 behind
    let space = metric(&target.scrape(), SPACE);
    let j3 = job(&tracker.key, &file, 3, &target, &sources[..2]);
    assert_eq!(
        send_repair(&tracker.net, &target, &j3, &file.manifest).await,
        Response::RepairQueued
    );
    match finished(&tracker, &target, j3.id()).await {
        RepairReport::Failed { reason, bad_sources } => {
            assert_eq!(bad_sources, named);
            assert_eq!(reason.lines().count(), 1, "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(piece_file(&target, &file.pieces[3]).is_none());
    assert_eq!(target.files_in("pieces").len(), 2);
    assert!(target.files_in("tmp").is_empty());
    assert_eq!(metric(&target.scrape(), SPACE), space);
    match tracker
        .ask(&target, Request::PieceStatus(piece_id(&file.pieces[3])))
        .await
    {
        Response::Piece(None) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_deletes_ended_deals_and_space_returns_also_across_restart() {
    let tracker = FakeTracker::start().await;
    let mut node = tracker.node("gc_interval_secs = 1\n").await;
    let client = TestClient::start().await;
    client.connect(&node).await;
    let space0 = metric(&node.scrape(), SPACE);
    assert_eq!(space0, 0);

    // one piece under two deals (shared piece file), both sealed
    let piece = random_bytes(200_000, 9);
    let mut deals = Vec::new();
    for (deal_id, nonce) in [(1u64, 1u64), (2, 2)] {
        let signed = Signed::sign(&client.key, &NET, &client.proposal(&node, &piece, nonce)).unwrap();
        let proposal = client.deal(&node, &piece, nonce).await;
        assert_eq!(proposal, signed.id());
        assert!(matches!(
            client.upload(&node, proposal, &piece).await,
            UploadResult::Stored(_)
        ));
        let t = Signed::sign(
            &tracker.key,
            &NET,
            &SealTicket {
                proposal,
                deal_id,
                ticket: [deal_id as u8; 32],
            },
        )
        .unwrap();
        assert_eq!(
            tracker.ask(&node, Request::StartSeal(t)).await,
            Response::SealQueued
        );
        tracker.set_deal(deal_id, proposal, signed.open(&NET, None).unwrap().1, "active");
        deals.push((deal_id, proposal, signed.open(&NET, None).unwrap().1));
    }
    for deal_id in [1, 2] {
        eventually(120, || async {
            matches!(
                tracker.ask(&node, Request::SealStatus(deal_id)).await,
                Response::SealStatus(SealReport::Sealed(_))
            )
            .then_some(())
        })
        .await;
    }
    // live deals survive collection rounds
    let asked = tracker.deal_queries();
    eventually(30, || async {
        (tracker.deal_queries() >= asked + 2).then_some(())
    })
    .await;
    assert_eq!(node.files_in("replicas").len(), 4);
    let full = metric(&node.scrape(), SPACE);
    assert_eq!(full, bytes_on_disk(&node));
    assert!(
        full > 3 * piece.len() as i64,
        "piece + two replicas + outboards: {full}"
    );

    // deal 1 removed by its owner: its replica goes, the shared piece stays
    tracker.set_deal(1, deals[0].1, deals[0].2.clone(), "removed");
    eventually(30, || async {
        (node.files_in("replicas").len() == 2).then_some(())
    })
    .await;
    assert_eq!(
        tracker.ask(&node, Request::SealStatus(1)).await,
        Response::SealStatus(SealReport::Unknown)
    );
    assert!(matches!(
        tracker.ask(&node, Request::SealStatus(2)).await,
        Response::SealStatus(SealReport::Sealed(_))
    ));
    assert_eq!(
        client.fetch(&node, &piece, 0, piece.len() as u64).await.unwrap(),
        piece
    );
    let half = metric(&node.scrape(), SPACE);
    assert_eq!(half, bytes_on_disk(&node));
    assert!(half < full);

    // a crash halfway through a deletion leaves files no record names: a
    // restart deletes them and the used space is unchanged
    node.kill();
    std::fs::write(
        node.path("replicas").join(format!("{:020}.replica", 1)),
        b"left over",
    )
    .unwrap();
    std::fs::write(node.path("pieces").join("00ff"), b"left over").unwrap();
    node.run();
    tracker.net.dial(node.peer, node.addrs.clone()).await.unwrap();
    client.connect(&node).await;
    assert_eq!(node.files_in("replicas").len(), 2);
    assert!(!node.files_in("pieces").contains(&"00ff".to_string()));
    assert_eq!(metric(&node.scrape(), SPACE), half);

    // a piece whose deal never came (no seal ticket) is kept until the
    // proposal's start (epoch 20): a deal not proven by then is cancelled
    let orphan = random_bytes(50_000, 10);
    let p = client.deal(&node, &orphan, 7).await;
    assert!(matches!(
        client.upload(&node, p, &orphan).await,
        UploadResult::Stored(_)
    ));
    let asked = tracker.deal_queries();
    eventually(30, || async {
        (tracker.deal_queries() >= asked + 2).then_some(())
    })
    .await;
    assert!(piece_file(&node, &orphan).is_some());
    tracker.set_epoch(19);
    let asked = tracker.deal_queries();
    eventually(30, || async {
        (tracker.deal_queries() >= asked + 2).then_some(())
    })
    .await;
    assert!(piece_file(&node, &orphan).is_some(), "kept before its start");
    tracker.set_epoch(20);
    eventually(30, || async {
        piece_file(&node, &orphan).is_none().then_some(())
    })
    .await;
    // and now that the node saw epoch 20, an admission that lapsed at 18
    // (the proposal can no longer be published) is refused
    let late = Signed::sign(&client.key, &NET, &client.proposal(&node, &orphan, 8)).unwrap();
    match client
        .net
        .request(node.peer, common::propose(late))
        .await
        .unwrap()
    {
        Response::DealRejected { reason } => assert!(reason.contains("lapsed"), "{reason}"),
        other => panic!("a lapsed admission was not refused: {other:?}"),
    }
    assert_eq!(metric(&node.scrape(), SPACE), half);
    assert!(
        piece_file(&node, &piece).is_some(),
        "deal 2 is live: its piece stays"
    );

    // deal 2 completes: nothing of the piece is left, space is back to before the put
    tracker.set_deal(2, deals[1].1, deals[1].2.clone(), "completed");
    eventually(30, || async {
        (node.files_in("replicas").is_empty() && node.files_in("pieces").is_empty()).then_some(())
    })
    .await;
    eventually(10, || async {
        (metric(&node.scrape(), SPACE) == space0).then_some(())
    })
    .await;
    match tracker.ask(&node, Request::PieceStatus(piece_id(&piece))).await {
        Response::Piece(None) => {}
        other => panic!("{other:?}"),
    }
    assert!(client.fetch(&node, &piece, 0, 10).await.is_err());
    // and stays so across a restart
    node.kill();
    node.run();
    assert_eq!(metric(&node.scrape(), SPACE), space0);
}
