//! Every decoder of untrusted bytes in crowdstore, as a fuzz target.
//!
//! Each [`Target`] takes arbitrary bytes and runs them through the same
//! code a node, tracker or client runs on bytes from the network or disk:
//! it must return (never panic, never allocate beyond the decoder's
//! bounds). Where a decoded value can be re-encoded the target also checks
//! that encoding is stable (`encode(decode(encode(v))) == encode(v)`), and
//! where it is a proof it is verified against a real fixture, so mutations
//! of a valid proof reach the verifier's checks and not only the parser.
//!
//! The cargo-fuzz crate in `fuzz/` (its own workspace, nightly) has one
//! `fuzz_targets/<name>.rs` per target calling [`run`]; `tests/corpora.rs`
//! replays every file under `fuzz/corpus/<name>/` through the same
//! function under stable `cargo test`, and checks that the [`seeds`] are
//! accepted (so a target cannot silently reject everything). Commands are
//! in docs/SECURITY.md ("Fuzzing").

use std::io::{Seek, Write};
use std::sync::{Mutex, OnceLock};

use crowd_chunker::unixfs::{PbNode, UnixFsData};
use crowd_chunker::{CarIndex, Cid, DagParams, HashAlg, DAG_PB};
use crowd_erasure::{Encoder, Layout, Params};
use crowd_porep::graph::node_count;
use crowd_porep::proof::{prove_seal, prove_window, verify_seal, verify_window};
use crowd_porep::seal::{replica_id, seal, Sealed};
use crowd_porep::tree::{verify_group, GroupOpening};
use crowd_porep::{
    Hash32, Outboard, Parents, SealParams, SealProof, SealPublic, TreeKind, WindowProof, WindowPublic,
};
use crowd_protocol::fetch::{GroupFrame, GroupFrameView};
use crowd_protocol::libp2p::identity::Keypair;
use crowd_protocol::wire::{from_cbor, read_frame_bytes, to_cbor};
use crowd_protocol::{
    Admission, DealAcceptance, DealProposal, FetchHeader, FetchRequest, Manifest, NetworkId, PieceId,
    PieceReceipt, ProviderRegistration, RepairJob, Request, Response, SealCommitment, SealProofMsg, SealSeed,
    SealTicket, Signable, Signed, TransferRequest, UploadHeader, UploadResult, WindowChallenge,
    WindowProofMsg,
};
use crowd_tracker::{sign_epoch, Input, Ledger, LedgerConfig};

/// One fuzz target: a name (its `fuzz/fuzz_targets/<name>.rs` and
/// `fuzz/corpus/<name>/`) and the function bytes go through. The function
/// returns whether the input was accepted (decoded, and verified where
/// that applies).
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]) -> bool,
}

/// The network wire targets open signed messages for (their seeds are
/// signed for it); the tracker input target uses its ledger's own.
pub const NET: NetworkId = NetworkId([0x42; 32]);

/// Every target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "request",
        run: request,
    },
    Target {
        name: "response",
        run: response,
    },
    Target {
        name: "frames",
        run: frames,
    },
    Target {
        name: "signed",
        run: signed,
    },
    Target {
        name: "car",
        run: car,
    },
    Target {
        name: "dag_pb",
        run: dag_pb,
    },
    Target {
        name: "manifest",
        run: manifest,
    },
    Target {
        name: "layout",
        run: layout,
    },
    Target {
        name: "seal_proof",
        run: seal_proof,
    },
    Target {
        name: "window_proof",
        run: window_proof,
    },
    Target {
        name: "tracker_input",
        run: tracker_input,
    },
    Target {
        name: "config",
        run: config,
    },
];

/// Runs the named target on `data` (what every `fuzz_targets/*.rs` calls).
///
/// # Panics
/// On an unknown name, or on whatever the target finds.
pub fn run(name: &str, data: &[u8]) -> bool {
    match TARGETS.iter().find(|t| t.name == name) {
        Some(t) => (t.run)(data),
        None => panic!("no fuzz target {name}"),
    }
}

/// CBOR whose re-encoding must be stable: decodes, encodes, decodes the
/// encoding and compares the two encodings.
fn stable_cbor<T: serde::Serialize + serde::de::DeserializeOwned>(
    what: &'static str,
    data: &[u8],
) -> Option<T> {
    let value: T = from_cbor(what, data).ok()?;
    let once = to_cbor(&value);
    let again: T = match from_cbor(what, &once) {
        Ok(v) => v,
        Err(e) => panic!("{what}: its own encoding does not decode: {e}"),
    };
    assert_eq!(to_cbor(&again), once, "{what}: encoding is not stable");
    Some(value)
}

/// A control request (`/crowd/control/1`), every signed body in it opened.
fn request(data: &[u8]) -> bool {
    let Some(r) = stable_cbor::<Request>("request", data) else {
        return false;
    };
    match &r {
        Request::ProposeDeal { proposal, admission } => {
            let _ = proposal.open(&NET, None);
            let _ = admission.open(&NET, None);
        }
        Request::StartSeal(t) => drop(t.open(&NET, None)),
        Request::ProveSeal(s) => drop(s.open(&NET, None)),
        Request::Challenge(c) => drop(c.open(&NET, None)),
        Request::Repair { job, manifest } => {
            let _ = job.open(&NET, None);
            let _ = Manifest::decode(&manifest.0);
        }
        Request::StoreManifest(bytes) => drop(Manifest::decode(bytes)),
        _ => {}
    }
    true
}

/// A control response, every signed body in it opened.
fn response(data: &[u8]) -> bool {
    let Some(r) = stable_cbor::<Response>("response", data) else {
        return false;
    };
    match &r {
        Response::DealAccepted(a) => drop(a.open(&NET, None)),
        Response::SealProof(p) => drop(p.open(&NET, None)),
        Response::WindowProof(p) => drop(p.open(&NET, None)),
        Response::Manifests(found) => {
            for m in found {
                let _ = Manifest::decode(&m.0);
            }
        }
        _ => {}
    }
    true
}

/// The data piece whose tree verified groups are checked against (64 KiB).
fn group_fixture() -> &'static (Vec<u8>, Outboard) {
    static F: OnceLock<(Vec<u8>, Outboard)> = OnceLock::new();
    F.get_or_init(|| {
        let piece = fixture_bytes(64 * 1024, b"group fixture");
        let outboard = Outboard::build(&piece);
        (piece, outboard)
    })
}

fn fixture_bytes(len: usize, tag: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; len];
    blake3::Hasher::new().update(tag).finalize_xof().fill(&mut v);
    v
}

/// Length-prefixed frames as the stream protocols read them (upload and
/// fetch headers, upload results, verified groups), bounded as they are.
fn frames(data: &[u8]) -> bool {
    let (piece, outboard) = group_fixture();
    let mut io = data;
    let mut any = false;
    futures::executor::block_on(async {
        while let Ok(body) = read_frame_bytes(&mut io, crowd_protocol::fetch::MAX_GROUP_FRAME).await {
            let _ = stable_cbor::<UploadHeader>("upload header", &body);
            let _ = stable_cbor::<FetchRequest>("fetch request", &body);
            let _ = stable_cbor::<FetchHeader>("fetch header", &body);
            if let Some(UploadResult::Stored(receipt)) = stable_cbor::<UploadResult>("upload result", &body) {
                let _ = receipt.open(&NET, None);
            }
            // the receivers' in-place reading accepts no more than ciborium
            // and reads the same
            let mut siblings = Vec::new();
            if let Ok(view) = GroupFrameView::parse(&body, &mut siblings) {
                let frame: GroupFrame = match from_cbor("group", &body) {
                    Ok(f) => f,
                    Err(e) => panic!("group: the view read a frame ciborium refuses: {e}"),
                };
                let theirs: Vec<[u8; 32]> = frame.siblings.iter().map(|s| s.0).collect();
                assert!(
                    frame.index == view.index && frame.bytes == view.bytes && theirs == siblings,
                    "group: the view and ciborium read different frames"
                );
            }
            if let Some(frame) = stable_cbor::<GroupFrame>("group", &body) {
                let opening: GroupOpening = frame.into();
                if verify_group(&outboard.root(), piece.len() as u64, TreeKind::Data, &opening).is_ok() {
                    any = true;
                }
            }
        }
    });
    any
}

fn open_as<T: Signable>(data: &[u8]) -> bool {
    match from_cbor::<Signed<T>>("signed", data) {
        Ok(s) => {
            let _ = s.id();
            let _ = s.claimed_signer();
            s.open(&NET, None).is_ok()
        }
        Err(_) => false,
    }
}

/// The signed kinds, by the first byte of a `signed` input.
const SIGNED_KINDS: &[fn(&[u8]) -> bool] = &[
    open_as::<DealProposal>,
    open_as::<DealAcceptance>,
    open_as::<Admission>,
    open_as::<PieceReceipt>,
    open_as::<SealTicket>,
    open_as::<SealCommitment>,
    open_as::<SealSeed>,
    open_as::<SealProofMsg>,
    open_as::<WindowChallenge>,
    open_as::<WindowProofMsg>,
    open_as::<RepairJob>,
    open_as::<ProviderRegistration>,
    open_as::<TransferRequest>,
];

/// A `Signed<T>` envelope: byte 0 picks `T`, the rest is the envelope.
fn signed(data: &[u8]) -> bool {
    let Some((&kind, rest)) = data.split_first() else {
        return false;
    };
    SIGNED_KINDS[usize::from(kind) % SIGNED_KINDS.len()](rest)
}

/// The temporary file CAR inputs are written to (`extract_file` reads a file).
fn car_file() -> &'static Mutex<std::fs::File> {
    static F: OnceLock<Mutex<std::fs::File>> = OnceLock::new();
    F.get_or_init(|| Mutex::new(tempfile::tempfile().unwrap_or_else(|e| panic!("a temporary file: {e}"))))
}

/// A CAR file: indexed, then (if it indexes) extracted with every block verified.
fn car(data: &[u8]) -> bool {
    if CarIndex::scan(data).is_err() {
        return false;
    }
    let file = car_file().lock().unwrap_or_else(|e| e.into_inner());
    let mut f: &std::fs::File = &file;
    // extract_file indexes from the file's position: the start
    let written =
        f.set_len(0).is_ok() && f.rewind().is_ok() && f.write_all(data).is_ok() && f.rewind().is_ok();
    assert!(written, "could not write the temporary CAR file");
    crowd_chunker::extract_file(&file, &mut std::io::sink()).is_ok()
}

/// A dag-pb node and its UnixFS data, as a DAG walk decodes a block.
fn dag_pb(data: &[u8]) -> bool {
    if let Ok(node) = PbNode::decode(data) {
        if let Some(d) = &node.data {
            if let Ok(u) = UnixFsData::decode(d) {
                let _ = u.content_len();
            }
        }
    }
    let _ = UnixFsData::decode(data);
    let cid: Cid = HashAlg::Blake3.cid(DAG_PB, data);
    crowd_chunker::decode_file_node(&cid, data).is_ok()
}

/// A file manifest; an accepted one re-encodes to what decodes equal.
fn manifest(data: &[u8]) -> bool {
    let Ok(m) = Manifest::decode(data) else {
        return false;
    };
    let bytes = match m.encode() {
        Ok(b) => b,
        Err(e) => panic!("an accepted manifest does not encode: {e}"),
    };
    match Manifest::decode(&bytes) {
        Ok(again) => assert_eq!(again, m, "manifest roundtrip"),
        Err(e) => panic!("a re-encoded manifest is refused: {e}"),
    }
    true
}

/// An erasure layout (as manifests carry it): decoded and validated, then
/// every derived quantity computed (no overflow, no panic).
fn layout(data: &[u8]) -> bool {
    let Some(l) = stable_cbor::<Layout>("layout", data) else {
        return false;
    };
    let g = l.geometry();
    let _ = (g.segment_count(), g.piece_len(), l.piece_len());
    let covering = g.segments_covering(&(0..l.file_len()));
    for s in covering.start..covering.end.min(covering.start + 64) {
        let _ = (g.segment_range(s), g.shard_len(s), g.piece_offset(s));
    }
    for i in 0..l.pieces().len() {
        assert!(l.piece_cid(i).is_ok(), "piece {i} of a valid layout has no CID");
    }
    true
}

const PROVIDER: Hash32 = [0xa1; 32];
const TICKET: Hash32 = [0xb2; 32];
const SEED: Hash32 = [0xc3; 32];
const RANDOMNESS: Hash32 = [0xd4; 32];
const DEAL: u64 = 77;
const EPOCH: u64 = 1234;

fn porep_params() -> SealParams {
    SealParams {
        seal_challenges: 6,
        window_challenges: 8,
        ..SealParams::devnet()
    }
}

/// One real sealed piece (8 KiB) and its proofs.
struct PorepFixture {
    seal_public: SealPublic,
    window_public: WindowPublic,
    seal_proof: SealProof,
    window_proof: WindowProof,
}

fn porep_fixture() -> &'static PorepFixture {
    static F: OnceLock<PorepFixture> = OnceLock::new();
    F.get_or_init(|| {
        let piece = fixture_bytes(8 * 1024, b"porep fixture");
        let params = porep_params();
        let parents = Parents::new(node_count(piece.len() as u64), &params)
            .unwrap_or_else(|e| panic!("fixture parents: {e}"));
        let rid = replica_id(&PROVIDER, blake3::hash(&piece).as_bytes(), DEAL, &TICKET);
        let sealed: Sealed =
            seal(&piece, &rid, &params, &parents).unwrap_or_else(|e| panic!("fixture seal: {e}"));
        let seal_proof = prove_seal(&piece, &sealed, &params, &parents, &SEED)
            .unwrap_or_else(|e| panic!("fixture seal proof: {e}"));
        let window_proof = prove_window(
            sealed.replica.as_slice(),
            &sealed.replica_outboard,
            &sealed.commitments.comm_c,
            &params,
            DEAL,
            EPOCH,
            &RANDOMNESS,
        )
        .unwrap_or_else(|e| panic!("fixture window proof: {e}"));
        PorepFixture {
            seal_public: SealPublic {
                piece_len: piece.len() as u64,
                comm_d: sealed.commitments.comm_d,
                comm_r: sealed.commitments.comm_r,
                replica_id: rid,
                seed: SEED,
            },
            window_public: WindowPublic {
                piece_len: piece.len() as u64,
                comm_r: sealed.commitments.comm_r,
                deal_id: DEAL,
                epoch: EPOCH,
                randomness: RANDOMNESS,
            },
            seal_proof,
            window_proof,
        }
    })
}

/// A seal proof's bytes, verified against the fixture's public inputs.
fn seal_proof(data: &[u8]) -> bool {
    let f = porep_fixture();
    match SealProof::decode(data) {
        Ok(p) => verify_seal(&f.seal_public, &porep_params(), &p).is_ok(),
        Err(_) => false,
    }
}

/// A window proof's bytes, verified against the fixture's public inputs.
fn window_proof(data: &[u8]) -> bool {
    let f = porep_fixture();
    match WindowProof::decode(data) {
        Ok(p) => verify_window(&f.window_public, &porep_params(), &p).is_ok(),
        Err(_) => false,
    }
}

fn key(seed: u8) -> Keypair {
    Keypair::ed25519_from_bytes([seed; 32]).unwrap_or_else(|e| panic!("a seeded key: {e}"))
}

/// A devnet ledger with a funded client and a registered provider, the
/// state tracker inputs are applied to.
fn ledger_fixture() -> &'static Ledger {
    static F: OnceLock<Ledger> = OnceLock::new();
    F.get_or_init(|| {
        let tracker = key(1);
        let mut ledger = Ledger::new(LedgerConfig::devnet(&tracker.public()))
            .unwrap_or_else(|e| panic!("fixture ledger: {e}"));
        for (i, seed) in [2u8, 3].into_iter().enumerate() {
            let input = Input::Mint {
                account: key(seed).public().to_peer_id().into(),
                amount: 1_000_000_000_000,
                nonce: i as u64,
            };
            ledger
                .apply(input)
                .unwrap_or_else(|e| panic!("fixture mint: {e}"));
        }
        let registration = Signed::sign(&key(3), &ledger.network(), &registration())
            .unwrap_or_else(|e| panic!("fixture registration: {e}"));
        ledger
            .apply(Input::RegisterProvider(registration))
            .unwrap_or_else(|e| panic!("fixture registration: {e}"));
        ledger
    })
}

fn registration() -> ProviderRegistration {
    ProviderRegistration {
        capacity: 1 << 40,
        price_per_gib_epoch: 1,
        collateral_per_gib: 1,
        nonce: 0,
    }
}

/// A ledger input (as the tracker's log stores it), applied to a copy of
/// the fixture ledger; the ledger's invariants must still hold.
fn tracker_input(data: &[u8]) -> bool {
    let Some(input) = stable_cbor::<Input>("tracker input", data) else {
        return false;
    };
    let mut ledger = ledger_fixture().clone();
    let applied = ledger.apply(input).is_ok();
    if let Err(e) = ledger.check_invariants() {
        panic!("ledger invariant broken by an input: {e}");
    }
    applied
}

/// A node or tracker `config.toml` (byte 0 picks which), parsed and checked;
/// a parse error goes through the one-line error formatter.
fn config(data: &[u8]) -> bool {
    let Some((&which, rest)) = data.split_first() else {
        return false;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return false;
    };
    let parsed = if which % 2 == 0 {
        toml::from_str::<crowd_node::config::NodeConfig>(text)
            .map_err(|e| e.to_string())
            .map(|c| c.check().is_ok())
    } else {
        toml::from_str::<crowd_tracker::service::TrackerConfig>(text)
            .map_err(|e| e.to_string())
            .map(|c| c.check().is_ok())
    };
    match parsed {
        Ok(ok) => ok,
        Err(e) => {
            let line = crowd_protocol::util::parse_error_line(&e);
            assert!(
                !line.contains('\n'),
                "a config error is more than one line: {line:?}"
            );
            false
        }
    }
}

/// Valid inputs for every target (the first corpus files): each must be
/// accepted by its target.
pub fn seeds() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let client = key(2);
    let provider = key(3);
    let tracker = key(1);
    let proposal = DealProposal {
        piece: PieceId(*blake3::hash(b"piece").as_bytes()),
        piece_size: 16 * 1024,
        client: client.public().to_peer_id(),
        provider: provider.public().to_peer_id(),
        price_per_epoch: 10,
        start_epoch: 20,
        duration_epochs: 10,
        provider_collateral: 1_000,
        expiry_epoch: 10,
        nonce: 1,
    };
    let signed_proposal = sign(&client, &NET, &proposal);
    let admission = sign(
        &tracker,
        &NET,
        &Admission {
            proposal: signed_proposal.id(),
            client: client.public().to_peer_id(),
            escrow: 100,
            until_epoch: 18,
        },
    );
    let challenge = sign(
        &tracker,
        &NET,
        &WindowChallenge {
            deal_id: DEAL,
            epoch: EPOCH,
            randomness: RANDOMNESS,
        },
    );
    let requests = vec![
        to_cbor(&Request::ProposeDeal {
            proposal: signed_proposal.clone(),
            admission: admission.clone(),
        }),
        to_cbor(&Request::Challenge(challenge.clone())),
        to_cbor(&Request::PieceStatus(PieceId([5; 32]))),
        to_cbor(&Request::SealStatus(3)),
    ];
    let responses = vec![
        to_cbor(&Response::Error {
            message: "no such deal".into(),
        }),
        to_cbor(&Response::Manifests(vec![])),
        to_cbor(&Response::SealQueued),
    ];

    let (piece, outboard) = group_fixture();
    let mut group_frames = Vec::new();
    for g in 0..2u64 {
        let start = g as usize * crowd_porep::tree::GROUP_LEN;
        let frame: GroupFrame = GroupOpening {
            group_index: g,
            bytes: piece[start..start + crowd_porep::tree::GROUP_LEN].to_vec(),
            siblings: outboard.group_siblings(g),
        }
        .into();
        group_frames.push(frame_of(&to_cbor(&frame)));
    }
    let mut stream = frame_of(&to_cbor(&FetchRequest {
        piece: PieceId([1; 32]),
        start: 0,
        end: 100,
    }));
    stream.extend(frame_of(&to_cbor(&FetchHeader::Ok { piece_size: 65536 })));
    stream.extend(group_frames.concat());

    let mut signed_seeds = Vec::new();
    let mut tagged = |kind: u8, bytes: Vec<u8>| {
        let mut v = vec![kind];
        v.extend(bytes);
        signed_seeds.push(v);
    };
    tagged(0, to_cbor(&signed_proposal));
    tagged(2, to_cbor(&admission));
    tagged(8, to_cbor(&challenge));
    tagged(11, to_cbor(&sign(&provider, &NET, &registration())));

    let data = fixture_bytes(100_000, b"car seed");
    let mut car_bytes = Vec::new();
    let root = crowd_chunker::write_car(&data, &small_dag(), &mut car_bytes)
        .unwrap_or_else(|e| panic!("seed CAR: {e}"));
    let mut blocks = crowd_chunker::InteriorBlocks(Default::default());
    let _ = crowd_chunker::build_from_slice(&data, &small_dag(), &mut blocks);
    let pb: Vec<Vec<u8>> = blocks.0.into_values().collect();
    let _ = root;

    let manifest_bytes = seed_manifest()
        .encode()
        .unwrap_or_else(|e| panic!("seed manifest: {e}"));
    let f = porep_fixture();

    let ledger = ledger_fixture();
    let transfer = sign(
        &client,
        &ledger.network(),
        &TransferRequest {
            to: provider.public().to_peer_id(),
            amount: 5,
            nonce: 0,
        },
    );
    let inputs = vec![
        to_cbor(&Input::Mint {
            account: client.public().to_peer_id().into(),
            amount: 7,
            nonce: ledger.mints(),
        }),
        to_cbor(&Input::Transfer(transfer)),
        to_cbor(&Input::AdmitProposal(sign(&client, &ledger.network(), &proposal))),
        to_cbor(
            &sign_epoch(&tracker, ledger.epoch(), &ledger.head())
                .unwrap_or_else(|e| panic!("seed epoch: {e}")),
        ),
    ];

    let mut node_config = vec![0u8];
    node_config.extend(crowd_node::config::NodeConfig::default().render().into_bytes());
    let mut tracker_config = vec![1u8];
    tracker_config.extend(
        crowd_tracker::service::TrackerConfig::default()
            .render()
            .into_bytes(),
    );

    vec![
        ("request", requests),
        ("response", responses),
        ("frames", vec![stream]),
        ("signed", signed_seeds),
        ("car", vec![car_bytes]),
        ("dag_pb", pb),
        ("manifest", vec![manifest_bytes]),
        ("layout", vec![to_cbor(&seed_manifest().layout)]),
        ("seal_proof", vec![f.seal_proof.encode()]),
        ("window_proof", vec![f.window_proof.encode()]),
        ("tracker_input", inputs),
        ("config", vec![node_config, tracker_config]),
    ]
}

fn sign<T: Signable>(key: &Keypair, net: &NetworkId, value: &T) -> Signed<T> {
    Signed::sign(key, net, value).unwrap_or_else(|e| panic!("seed signature: {e}"))
}

fn frame_of(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

/// Small chunks and fan-out so a seed CAR has interior nodes.
fn small_dag() -> DagParams {
    let chunking = crowd_chunker::ChunkParams::new(crowd_chunker::ChunkerKind::Fixed, 4096)
        .unwrap_or_else(|e| panic!("seed chunking: {e}"));
    DagParams::new(chunking, 4, HashAlg::Blake3).unwrap_or_else(|e| panic!("seed DAG params: {e}"))
}

fn seed_manifest() -> Manifest {
    let data = fixture_bytes(5000, b"manifest seed");
    let params = Params::new(2, 1, 4096).unwrap_or_else(|e| panic!("seed params: {e}"));
    let enc = Encoder::new(params).unwrap_or_else(|e| panic!("seed encoder: {e}"));
    let (layout, _) = enc
        .encode_bytes(&data)
        .unwrap_or_else(|e| panic!("seed layout: {e}"));
    let provider = key(3).public().to_peer_id().to_string();
    let pieces = (0..3)
        .map(|i| crowd_protocol::ManifestPiece {
            index: i,
            piece: layout
                .piece_cid(i as usize)
                .unwrap_or_else(|e| panic!("seed piece: {e}")),
            provider: provider.clone(),
            deal_id: 10 + i,
        })
        .collect();
    Manifest {
        version: crowd_protocol::MANIFEST_VERSION,
        root: layout.piece_cid(0).unwrap_or_else(|e| panic!("seed root: {e}")),
        size: data.len() as u64,
        chunking: crowd_protocol::Chunking {
            chunker: "fixed".into(),
            chunk_size: 1 << 20,
            max_links: 174,
            hash: "blake3".into(),
        },
        layout,
        pieces,
        encryption: None,
    }
}
