//! The fetch and decode core against real `crowd-node` processes on
//! loopback: pieces uploaded by an in-process client, a manifest built by
//! hand (no tracker needed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::progress::Progress;
use crowd_chunker::{build_from_slice, write_car, ChunkParams, ChunkerKind, DagParams, Discard, HashAlg};
use crowd_erasure::{Encoder, Params};
/// The network these nodes are configured with and messages signed for.
const NET: crowd_protocol::NetworkId = crowd_protocol::NetworkId([9; 32]);

use crowd_protocol::libp2p::identity::Keypair;
use crowd_protocol::libp2p::{Multiaddr, PeerId};
use crowd_protocol::{
    Chunking, DealProposal, Manifest, ManifestPiece, Network, NetworkConfig, PieceId, Request, Response,
    Signed, UploadResult, MANIFEST_VERSION,
};

use super::*;

/// `crowd-node`, built next to this test binary by `cargo test --workspace`.
fn node_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("crowd-node");
    assert!(
        bin.exists(),
        "{} not found: build the workspace (cargo test --workspace)",
        bin.display()
    );
    bin
}

struct Node {
    _home: tempfile::TempDir,
    child: Option<Child>,
    peer: PeerId,
    addrs: Vec<Multiaddr>,
}

impl Node {
    fn start(tracker: &PeerId) -> Self {
        let home = tempfile::tempdir().unwrap();
        let out = Command::new(node_bin())
            .args(["init", "--home"])
            .arg(home.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::fs::write(
            home.path().join("config.toml"),
            format!(
                "listen = [\"/ip4/127.0.0.1/tcp/0\"]\nmetrics_address = \"127.0.0.1:0\"\n\
                 tracker_peer_id = \"{tracker}\"\ntransfer_timeout_secs = 20\nnetwork_id = \"{}\"\n",
                NET.to_hex()
            ),
        )
        .unwrap();
        let info = home.path().join("node.json");
        let mut child = Command::new(node_bin())
            .args(["run", "--home"])
            .arg(home.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(text) = std::fs::read_to_string(&info) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                    return Self {
                        _home: home,
                        child: Some(child),
                        peer: v["peer_id"].as_str().unwrap().parse().unwrap(),
                        addrs: v["listen"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|a| a.as_str().unwrap().parse().unwrap())
                            .collect(),
                    };
                }
            }
            assert!(child.try_wait().unwrap().is_none(), "crowd-node exited early");
            assert!(Instant::now() < deadline, "crowd-node did not become ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut v);
    v
}

const K: usize = 4;
const M: usize = 2;

/// Six nodes, each holding one piece of `data` (4 + 2, 256 KiB segments),
/// and the file's manifest.
struct Net {
    nodes: Vec<Node>,
    net: Network,
    data: Vec<u8>,
    pieces: Vec<Vec<u8>>,
    manifest: Manifest,
    params: DagParams,
}

impl Net {
    async fn start(len: usize) -> Self {
        Self::start_with(random_bytes(len, len as u64)).await
    }

    /// Six nodes holding the pieces of `data`.
    async fn start_with(data: Vec<u8>) -> Self {
        let tracker_key = Keypair::generate_ed25519();
        let tracker = tracker_key.public().to_peer_id();
        let nodes: Vec<Node> = (0..K + M).map(|_| Node::start(&tracker)).collect();
        let key = Keypair::generate_ed25519();
        let config = NetworkConfig {
            request_timeout: Duration::from_secs(30),
            ..NetworkConfig::default()
        };
        let (net, _inbound) = Network::start(key.clone(), config).await.unwrap();
        let (layout, pieces) = Encoder::new(Params::new(K, M, 256 << 10).unwrap())
            .unwrap()
            .encode_bytes(&data)
            .unwrap();
        for (i, (node, piece)) in nodes.iter().zip(&pieces).enumerate() {
            net.dial(node.peer, node.addrs.clone()).await.unwrap();
            let proposal = DealProposal {
                piece: PieceId(*blake3::hash(piece).as_bytes()),
                piece_size: piece.len() as u64,
                client: key.public().to_peer_id(),
                provider: node.peer,
                price_per_epoch: 1_000_000,
                start_epoch: 1,
                duration_epochs: 100,
                provider_collateral: 0,
                expiry_epoch: 50,
                nonce: i as u64,
            };
            let signed = Signed::sign(&key, &NET, &proposal).unwrap();
            let admission = Signed::sign(
                &tracker_key,
                &NET,
                &crowd_protocol::Admission {
                    proposal: signed.id(),
                    client: proposal.client,
                    escrow: 100_000_000,
                    until_epoch: proposal.expiry_epoch,
                },
            )
            .unwrap();
            match net
                .request(
                    node.peer,
                    Request::ProposeDeal {
                        proposal: signed.clone(),
                        admission,
                    },
                )
                .await
                .unwrap()
            {
                Response::DealAccepted(_) => {}
                other => panic!("deal not accepted: {other:?}"),
            }
            let result = crowd_protocol::transfer::upload(
                &mut net.streams(),
                node.peer,
                signed.id(),
                &piece[..],
                piece.len() as u64,
                Duration::from_secs(60),
            )
            .await
            .unwrap();
            assert!(matches!(result, UploadResult::Stored(_)), "{result:?}");
        }
        let providers: Vec<PeerId> = nodes.iter().map(|n| n.peer).collect();
        let (manifest, params) = manifest_of(&data, layout, &providers);
        // decode checks what a manifest from the network must satisfy
        let manifest = Manifest::decode(&manifest.encode().unwrap()).unwrap();
        Self {
            nodes,
            net,
            data,
            pieces,
            manifest,
            params,
        }
    }

    fn job<'a>(
        &'a self,
        plan: &'a PieceRanges,
        dir: &'a ResumeDir,
        addrs: &'a HashMap<PeerId, Vec<Multiaddr>>,
        bar: &'a Progress,
        whole: bool,
    ) -> FetchJob<'a> {
        FetchJob {
            manifest: &self.manifest,
            plan,
            dir,
            addrs,
            stall: Duration::from_secs(10),
            whole,
            progress: bar,
            landed: None,
            kept: None,
        }
    }

    /// The whole file as a get that keeps its output fetches it: the data
    /// pieces reach the decoder through in-memory stages.
    async fn get_kept(&self, out: &Path) -> Result<(Vec<u8>, super::engine::Fetched)> {
        let range = 0..self.manifest.size;
        let dir = ResumeDir::open(out, &format!("test {}-{}\n", range.start, range.end))?;
        let plan = PieceRanges::for_range(&self.manifest.layout.geometry(), &range);
        let addrs = self.addrs();
        let bar = Progress::hidden();
        let mut job = self.job(&plan, &dir, &addrs, &bar, true);
        job.kept = Some(0);
        let mut bytes = Vec::new();
        let fetched = tokio::task::block_in_place(|| {
            let rt = tokio::runtime::Handle::current();
            super::pipeline::with_root_check(&mut bytes, &self.params, &self.manifest.root, |out| {
                super::pipeline::retrieve(&rt, &self.net, job, &range, out)
            })
        })?;
        Ok((bytes, fetched))
    }

    fn addrs(&self) -> HashMap<PeerId, Vec<Multiaddr>> {
        self.nodes.iter().map(|n| (n.peer, n.addrs.clone())).collect()
    }

    /// Fetches and decodes `range` into `out` as `get` does; returns what the
    /// fetch reported.
    async fn get(&self, out: &Path, range: Range<u64>) -> Result<(Vec<u8>, super::engine::Fetched)> {
        let whole = range == (0..self.manifest.size);
        let dir = ResumeDir::open(out, &format!("test {}-{}\n", range.start, range.end))?;
        let plan = PieceRanges::for_range(&self.manifest.layout.geometry(), &range);
        let addrs = self.addrs();
        let bar = Progress::hidden();
        let job = self.job(&plan, &dir, &addrs, &bar, whole);
        // as `get` does: decoding follows the fetch, the root is checked alongside
        let mut bytes = Vec::new();
        let fetched = tokio::task::block_in_place(|| {
            let rt = tokio::runtime::Handle::current();
            if whole {
                super::pipeline::with_root_check(&mut bytes, &self.params, &self.manifest.root, |out| {
                    super::pipeline::retrieve(&rt, &self.net, job, &range, out)
                })
            } else {
                super::pipeline::retrieve(&rt, &self.net, job, &range, &mut bytes)
            }
        })?;
        Ok((bytes, fetched))
    }
}

fn fresh_out(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pieces_from_real_nodes_decode_whole_by_range_and_without_m_providers() {
    let len = (1 << 20) + 12_345; // 5 segments, the last partial
    let mut t = Net::start(len).await;
    let tmp = tempfile::tempdir().unwrap();

    // every provider up: the whole file, its root checked
    let out = fresh_out(&tmp, "all");
    let (bytes, fetched) = t.get(&out, 0..len as u64).await.unwrap();
    assert_eq!(bytes, t.data);
    assert!(fetched.complete.len() >= K);
    assert!(fetched.failures.is_empty(), "{:?}", fetched.failures);

    // ranges: inside one shard, across shards, across segments, the end
    for (a, b) in [
        (0u64, 1u64),
        (70_000, 70_100),
        (60_000, 200_000),
        (200_000, 700_001),
        (len as u64 - 3, len as u64),
    ] {
        let out = fresh_out(&tmp, &format!("r{a}"));
        let (bytes, _) = t.get(&out, a..b).await.unwrap();
        assert_eq!(bytes, &t.data[a as usize..b as usize], "{a}..{b}");
    }

    // m providers gone (SIGKILL), including two data pieces': rebuilt from parity
    t.nodes[0].kill();
    t.nodes[2].kill();
    let out = fresh_out(&tmp, "degraded");
    let (bytes, fetched) = t.get(&out, 0..len as u64).await.unwrap();
    assert_eq!(bytes, t.data);
    assert_eq!(fetched.complete, vec![1, 3, 4, 5]);
    // (an attempt on a killed node still waiting when the other pieces
    // made the file is not reported: which ones are depends on timing)
    let failed: Vec<usize> = fetched.failures.iter().map(|f| f.piece).collect();
    assert!(failed.iter().all(|p| [0, 2].contains(p)), "{failed:?}");
    let (bytes, _) = t
        .get(&fresh_out(&tmp, "degraded-range"), 100..300_000)
        .await
        .unwrap();
    assert_eq!(bytes, &t.data[100..300_000]);

    // one more gone: not enough pieces, one clear line
    t.nodes[4].kill();
    let out = fresh_out(&tmp, "too-few");
    let e = format!("{:#}", t.get(&out, 0..len as u64).await.unwrap_err());
    assert!(
        e.starts_with("only 3 of the 4 pieces needed could be fetched: piece "),
        "{e}"
    );
    assert!(!e.contains('\n'), "{e}");
}

/// Behind a kept output the data pieces are staged in memory, not in their
/// files; the file is the same with every provider up, and with two data
/// pieces' providers gone (the staged and spilled bytes of the others are
/// then decoded with parity).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_behind_a_kept_output_stages_the_data_pieces_and_still_decodes_from_parity() {
    // 40 segments of 256 KiB: each data piece (2.5 MiB) is more than its
    // stage holds
    let len = 10 * (1 << 20) + 777;
    let mut t = Net::start(len).await;
    let tmp = tempfile::tempdir().unwrap();
    let (bytes, fetched) = t.get_kept(&fresh_out(&tmp, "all")).await.unwrap();
    assert!(bytes == t.data, "the staged get differs");
    assert!(fetched.failures.is_empty(), "{:?}", fetched.failures);
    t.nodes[1].kill();
    t.nodes[3].kill();
    let (bytes, fetched) = t.get_kept(&fresh_out(&tmp, "degraded")).await.unwrap();
    assert!(bytes == t.data, "the staged get from parity differs");
    assert_eq!(fetched.complete, vec![0, 2, 4, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_get_resumes_from_what_it_kept() {
    let len = 900_000;
    let mut t = Net::start(len).await;
    let tmp = tempfile::tempdir().unwrap();
    let out = fresh_out(&tmp, "file");
    let dir = ResumeDir::open(&out, &format!("test 0-{len}\n")).unwrap();
    // earlier run: pieces 0 and 1 complete, piece 3 partly (not on a group
    // boundary), piece 5 complete but wrong
    std::fs::write(dir.piece_path(0), &t.pieces[0]).unwrap();
    std::fs::write(dir.piece_path(1), &t.pieces[1]).unwrap();
    std::fs::write(dir.piece_path(3), &t.pieces[3][..50_000]).unwrap();
    let mut bad = t.pieces[5].clone();
    bad[10] ^= 1;
    std::fs::write(dir.piece_path(5), &bad).unwrap();
    drop(dir);
    // their providers are gone: more than m down, only resumable with what was kept
    t.nodes[0].kill();
    t.nodes[1].kill();
    t.nodes[2].kill();
    let (bytes, fetched) = t.get(&out, 0..len as u64).await.unwrap();
    assert_eq!(bytes, t.data);
    assert!(fetched.complete.len() >= K, "{:?}", fetched.complete);
    assert!(fetched.complete.starts_with(&[0, 1]), "{:?}", fetched.complete);
    // piece 3 went on from its last whole group; piece 5's bad bytes were dropped
    let dir = ResumeDir::open(&out, &format!("test 0-{len}\n")).unwrap();
    let p3 = std::fs::read(dir.piece_path(3)).unwrap();
    assert!(p3.len() >= 49_152 && t.pieces[3].starts_with(&p3), "{}", p3.len());
    let p5 = std::fs::read(dir.piece_path(5)).unwrap_or_default();
    assert!(t.pieces[5].starts_with(&p5));
    // a directory left for another target is started afresh
    let again = ResumeDir::open(&out, "test other\n").unwrap();
    assert_eq!(again.have(0), 0);
}

#[test]
fn export_writes_the_same_car_as_the_chunker() {
    let tmp = tempfile::tempdir().unwrap();
    let data = random_bytes(700_000, 3);
    let params = DagParams::new(
        ChunkParams::new(ChunkerKind::Fixed, 64 << 10).unwrap(),
        4,
        HashAlg::Blake3,
    )
    .unwrap();
    let path = tmp.path().join("file");
    std::fs::write(&path, &data).unwrap();
    let file = File::open(&path).unwrap();
    let mut interior = InteriorBlocks::default();
    let dag = build_from_reader(BufReader::new(&file), &params, &mut interior).unwrap();
    let out = tmp.path().join("out.car");
    write_car_from(&file, &interior, &dag, &out).unwrap();
    let mut expected = Vec::new();
    write_car(&data, &params, &mut expected).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), expected);
    // the root check refuses other bytes
    let other = build_from_slice(b"other", &params, &mut Discard).unwrap().cid;
    assert!(check_root(&mut &data[..], &params, &other).is_err());
    check_root(&mut &data[..], &params, &dag.cid).unwrap();
    // a resumed get's kept output as the DAG's first leaves, the rest after
    // them: the same root; an output shorter than recorded is refused
    let kept = 3 * (64 << 10);
    let mut first = kept_dag(&path, kept, &params).unwrap();
    assert_eq!(first.size(), kept);
    first
        .push_fixed_from_reader(&data[kept as usize..], &mut Discard)
        .unwrap();
    assert_eq!(first.finish(&mut Discard).unwrap().cid, dag.cid);
    assert_eq!(kept_dag(&path, 0, &params).unwrap().size(), 0);
    let e = kept_dag(&path, data.len() as u64 + 1, &params).unwrap_err();
    assert!(e.to_string().contains("not the"), "{e}");
    // so does the check of a DAG built while decrypting: another root, or none
    root_built(Some(&dag), &dag.cid).unwrap();
    for built in [None, Some(&dag)] {
        let e = root_built(built, &other).unwrap_err();
        assert!(e.downcast_ref::<WrongRoot>().is_some(), "{e}");
    }
}

#[test]
fn cids_and_outputs_are_checked_before_the_network() {
    let e = "xyz".parse::<Target>().unwrap_err().to_string();
    assert!(e.starts_with("'xyz' is not a CID"), "{e}");
    let e = "crowd:xyz".parse::<Target>().unwrap_err().to_string();
    assert!(e.contains("capability"), "{e}");
    let tmp = tempfile::tempdir().unwrap();
    assert!(check_output(tmp.path()).is_err());
    assert_eq!(
        store::resume_path(Path::new("a/b.bin")),
        Path::new("a/.b.bin.crowd-get")
    );
    assert_eq!(
        store::resume_path(Path::new("b.bin")),
        Path::new("./.b.bin.crowd-get")
    );
}

/// The manifest of `data` with `layout`, 64 KiB fixed chunks, piece `i`
/// with `providers[i]`; and its DAG parameters.
fn manifest_of(data: &[u8], layout: crowd_erasure::Layout, providers: &[PeerId]) -> (Manifest, DagParams) {
    let params = DagParams::new(
        ChunkParams::new(ChunkerKind::Fixed, 64 << 10).unwrap(),
        4,
        HashAlg::Blake3,
    )
    .unwrap();
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        root: build_from_slice(data, &params, &mut Discard).unwrap().cid,
        size: data.len() as u64,
        chunking: Chunking {
            chunker: "fixed".into(),
            chunk_size: 64 << 10,
            max_links: 4,
            hash: "blake3".into(),
        },
        pieces: (0..K + M)
            .map(|i| ManifestPiece {
                index: i as u64,
                piece: layout.piece_cid(i).unwrap(),
                provider: providers[i].to_string(),
                deal_id: i as u64,
            })
            .collect(),
        layout,
        encryption: None,
    };
    (manifest, params)
}

#[test]
fn decoding_follows_the_data_pieces_as_they_land() {
    let len = (1 << 20) + 12_345; // 5 segments, the last partial
    let data = random_bytes(len, 7);
    let (layout, pieces) = Encoder::new(Params::new(K, M, 256 << 10).unwrap())
        .unwrap()
        .encode_bytes(&data)
        .unwrap();
    let providers: Vec<PeerId> = (0..K + M).map(|_| PeerId::random()).collect();
    let (manifest, _) = manifest_of(&data, layout, &providers);
    let g = manifest.layout.geometry();
    let tmp = tempfile::tempdir().unwrap();
    let out = fresh_out(&tmp, "file");
    let dir = ResumeDir::open(&out, "test\n").unwrap();
    let plan = PieceRanges::for_range(&g, &(0..len as u64));
    let addrs = HashMap::new();
    let bar = Progress::hidden();
    let job = FetchJob {
        manifest: &manifest,
        plan: &plan,
        dir: &dir,
        addrs: &addrs,
        stall: Duration::from_secs(10),
        whole: true,
        progress: &bar,
        landed: None,
        kept: None,
    };
    let landed = super::engine::Landed::new(K + M);
    // data pieces 0, 1, 3 and both parity pieces complete; piece 2 holds two
    // and a half segments' shards
    let part = g.piece_offset(2) + g.shard_len(2) / 2;
    for (i, p) in pieces.iter().enumerate() {
        let held = if i == 2 { &p[..part as usize] } else { &p[..] };
        std::fs::write(dir.piece_path(i), held).unwrap();
        landed.set(i, held.len() as u64);
    }
    landed.finish();
    let mut bytes = Vec::new();
    let upto = super::pipeline::follow(&job, &landed, &mut bytes, 0).unwrap();
    // the first two segments, all data pieces hold them; the rest waits for the fetch's choice
    assert_eq!(upto, g.segment_range(2).start);
    assert_eq!(bytes, &data[..upto as usize]);

    // a data piece whose file is shorter than it claims: nothing written for
    // that segment, the rest is left to the decode after the fetch
    let landed = super::engine::Landed::new(K + M);
    for (i, p) in pieces.iter().enumerate().take(K) {
        landed.set(i, p.len() as u64);
    }
    landed.finish();
    let mut bytes = Vec::new();
    let upto = super::pipeline::follow(&job, &landed, &mut bytes, 0).unwrap();
    assert_eq!(upto, g.segment_range(2).start);
    assert_eq!(bytes, &data[..upto as usize]);

    // every data piece landed: the whole file, no decode left
    std::fs::write(dir.piece_path(2), &pieces[2]).unwrap();
    let mut bytes = Vec::new();
    let upto = super::pipeline::follow(&job, &landed, &mut bytes, 0).unwrap();
    assert_eq!(upto, len as u64);
    assert_eq!(bytes, data);

    // nothing landed and the fetch over: nothing decoded
    let none = super::engine::Landed::new(K + M);
    none.finish();
    let mut bytes = Vec::new();
    assert_eq!(super::pipeline::follow(&job, &none, &mut bytes, 0).unwrap(), 0);
    assert!(bytes.is_empty());
}

/// Without the tracker: providers that hold the manifest announce its root
/// CID on the DHT, and `get` finds it there and checks it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifest_is_found_on_the_dht() {
    let t = Net::start(300_000).await;
    let root = t.manifest.root;
    let wait = Duration::from_secs(5);
    // nobody announced it yet: not found, and nothing went wrong
    let mut problems = Vec::new();
    assert!(
        super::manifests_from_dht(&t.net, &t.addrs(), &root, wait, &mut problems)
            .await
            .is_empty()
    );
    assert!(problems.is_empty(), "{problems:?}");

    let bytes = t.manifest.encode().unwrap();
    for node in &t.nodes[..2] {
        match t
            .net
            .request(node.peer, Request::StoreManifest(bytes.clone()))
            .await
            .unwrap()
        {
            Response::ManifestStored(_) => {}
            other => panic!("manifest not stored: {other:?}"),
        }
    }
    // the announcement runs in the background on the nodes
    let deadline = Instant::now() + Duration::from_secs(20);
    let found = loop {
        let mut problems = Vec::new();
        if let Some((m, cid)) = super::manifests_from_dht(&t.net, &t.addrs(), &root, wait, &mut problems)
            .await
            .into_iter()
            .next()
        {
            assert_eq!(cid, crowd_protocol::manifest_cid(&bytes));
            break m;
        }
        assert!(Instant::now() < deadline, "not found on the DHT: {problems:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(found, t.manifest);
}

/// A ciphertext segment tampered before it was erasure-coded (so parity
/// encodes the tampered bytes and piece hashes match them, as a lying
/// uploader would make them): the fetch verifies, the segment's tag does
/// not, and no output is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_ciphertext_segment_fails_its_tag_and_leaves_no_output() {
    use crate::crypt::{encrypt_bytes, CryptError, FileKey, CIPHER_SEGMENT, SEGMENT};
    let key = FileKey::generate(&mut rand::thread_rng());
    let plain = random_bytes(3 * SEGMENT + 999, 77);
    let mut cipher = encrypt_bytes(&key, &plain).unwrap();
    cipher[CIPHER_SEGMENT + 100] ^= 0x40;
    let net = Net::start_with(cipher).await;
    let tmp = tempfile::tempdir().unwrap();
    let out = fresh_out(&tmp, "out.bin");
    let range = 0..net.manifest.size;
    let dir = ResumeDir::open(&out, "tampered\n").unwrap();
    let plan = PieceRanges::for_range(&net.manifest.layout.geometry(), &range);
    let addrs = net.addrs();
    let bar = Progress::hidden();
    let job = net.job(&plan, &dir, &addrs, &bar, true);
    let result = tokio::task::block_in_place(|| {
        let rt = tokio::runtime::Handle::current();
        crate::input::write_atomically(&out, |f| {
            let mut w = std::io::BufWriter::new(&mut *f);
            let mut d = decrypt_to(&mut w, &key, plain.len() as u64, &(0..plain.len() as u64));
            let fetched = super::pipeline::retrieve(&rt, &net.net, job, &range, &mut d)?;
            d.finish()?;
            Ok(fetched)
        })
    });
    let e = result.unwrap_err();
    let shown = format!("{e:#}");
    let e = crate::error::from_anyhow(e);
    assert!(
        matches!(e, crate::Error::Crypt(CryptError::Tampered { segment: 1 })),
        "{e:?}: {shown}"
    );
    assert!(!out.exists(), "a tampered file was written as the output");
    assert!(
        std::fs::read_dir(tmp.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".partial")),
        "the temporary output was left behind"
    );
}
