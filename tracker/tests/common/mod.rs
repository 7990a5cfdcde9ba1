//! A small world for ledger tests: deterministic keys, real pieces sealed and
//! proven with crowd-porep, and a log kept next to the ledger.

// Fixture code: a broken fixture is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::BTreeMap;

use crowd_porep::graph::node_count;
use crowd_porep::proof::{prove_seal, prove_window};
use crowd_porep::seal::{replica_id, seal};
use crowd_porep::{Parents, SealParams, Sealed};
use crowd_protocol::libp2p::identity::Keypair;
use crowd_protocol::{
    Amount, DealAcceptance, DealProposal, Epoch, FileRegistration, PieceId, RemoveRequest, RenewRequest,
    RepairJob, SealCommitment, SealProofMsg, Signed, WindowProofMsg,
};
use crowd_tracker::{
    provider_hash, replay, sign_epoch, AccountId, Deal, DealId, DealState, Event, FileId, Input, Ledger,
    LedgerConfig, LedgerError, LogEntry, ProviderRegistration, RetrievalAudit, TransferRequest,
    WithdrawRequest,
};

/// A deterministic ed25519 key.
pub fn key(seed: u8) -> Keypair {
    Keypair::ed25519_from_bytes([seed; 32]).unwrap()
}

pub fn id(k: &Keypair) -> AccountId {
    AccountId(k.public().to_peer_id())
}

/// Piece sizes used by the tests: small, one ragged.
pub const PIECE_SIZES: [usize; 2] = [4096, 5000];

pub struct World {
    pub tracker: Keypair,
    pub ledger: Ledger,
    pub log: Vec<LogEntry>,
    pub pieces: Vec<Vec<u8>>,
    parents: Vec<Parents>,
    sealed: BTreeMap<DealId, Sealed>,
    nonces: BTreeMap<AccountId, u64>,
    proposal_nonce: u64,
    /// Deals as the ledger archived them (`Event::Archived`).
    archived: BTreeMap<DealId, Deal>,
}

impl World {
    pub fn new() -> Self {
        Self::with_config(|_| {})
    }

    pub fn with_config(f: impl FnOnce(&mut LedgerConfig)) -> Self {
        let tracker = key(200);
        let mut config = LedgerConfig::devnet(&tracker.public());
        f(&mut config);
        let pieces: Vec<Vec<u8>> = PIECE_SIZES
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                let mut p = vec![0u8; len];
                blake3::Hasher::new()
                    .update(&[i as u8])
                    .finalize_xof()
                    .fill(&mut p);
                p
            })
            .collect();
        let parents = pieces
            .iter()
            .map(|p| Parents::new(node_count(p.len() as u64), &config.params).unwrap())
            .collect();
        Self {
            tracker,
            ledger: Ledger::new(config).unwrap(),
            log: Vec::new(),
            pieces,
            parents,
            sealed: BTreeMap::new(),
            nonces: BTreeMap::new(),
            proposal_nonce: 0,
            archived: BTreeMap::new(),
        }
    }

    pub fn params(&self) -> SealParams {
        self.ledger.config().params
    }

    /// Applies an input and logs it if accepted.
    pub fn apply(&mut self, input: Input) -> Result<Vec<Event>, LedgerError> {
        let (entry, events) = self.ledger.apply_logged(input)?;
        self.log.push(entry);
        for e in &events {
            if let Event::Archived { deals, .. } = e {
                self.archived.extend(deals.iter().map(|d| (d.id, d.clone())));
            }
        }
        Ok(events)
    }

    /// A deal in the ledger's state, or as it was archived.
    pub fn deal(&self, id: DealId) -> Deal {
        match self.ledger.deal(id) {
            Some(d) => d.clone(),
            None => self
                .archived
                .get(&id)
                .cloned()
                .expect("no such deal, live or archived"),
        }
    }

    /// Applies an input that must be refused, and checks it changed nothing.
    pub fn refuse(&mut self, input: Input) -> LedgerError {
        let before = self.ledger.clone();
        let err = self.apply(input).expect_err("input should be refused");
        assert_eq!(self.ledger, before, "a refused input changed the ledger: {err}");
        err
    }

    pub fn mint(&mut self, who: &Keypair, amount: Amount) {
        let nonce = self.ledger.mints();
        self.apply(Input::Mint {
            account: id(who),
            amount,
            nonce,
        })
        .unwrap();
    }

    fn next_nonce(&mut self, who: &Keypair) -> u64 {
        self.ledger.account(&id(who)).nonce
    }

    pub fn register_input(&mut self, provider: &Keypair, capacity: u64) -> Input {
        let nonce = self.next_nonce(provider);
        let reg = ProviderRegistration {
            capacity,
            price_per_gib_epoch: 1,
            collateral_per_gib: 1,
            nonce,
        };
        Input::RegisterProvider(Signed::sign(provider, &self.ledger.network(), &reg).unwrap())
    }

    pub fn register(&mut self, provider: &Keypair, capacity: u64) {
        let input = self.register_input(provider, capacity);
        self.apply(input).unwrap();
    }

    pub fn withdraw_input(&mut self, who: &Keypair, amount: Amount) -> Input {
        let nonce = self.next_nonce(who);
        Input::Withdraw(
            Signed::sign(who, &self.ledger.network(), &WithdrawRequest { amount, nonce }).unwrap(),
        )
    }

    pub fn transfer_input(&mut self, from: &Keypair, to: &Keypair, amount: Amount) -> Input {
        let nonce = self.next_nonce(from);
        let req = TransferRequest {
            to: to.public().to_peer_id(),
            amount,
            nonce,
        };
        Input::Transfer(Signed::sign(from, &self.ledger.network(), &req).unwrap())
    }

    /// A proposal of piece `piece` from `client` to `provider`, starting
    /// `lead` epochs from now.
    pub fn proposal(&mut self, client: &Keypair, provider: &Keypair, terms: Terms) -> DealProposal {
        self.proposal_nonce += 1;
        let piece = &self.pieces[terms.piece];
        DealProposal {
            piece: PieceId(*blake3::hash(piece).as_bytes()),
            piece_size: piece.len() as u64,
            client: client.public().to_peer_id(),
            provider: provider.public().to_peer_id(),
            price_per_epoch: terms.price,
            start_epoch: self.ledger.epoch() + terms.lead,
            duration_epochs: terms.duration,
            provider_collateral: terms.collateral,
            expiry_epoch: self.ledger.epoch() + 10,
            nonce: self.proposal_nonce,
        }
    }

    /// Signs a proposal by `client_key` and its acceptance by `provider_key`.
    pub fn publish_input(&self, p: &DealProposal, client_key: &Keypair, provider_key: &Keypair) -> Input {
        let proposal = Signed::sign(client_key, &self.ledger.network(), p).unwrap();
        let acceptance = Signed::sign(
            provider_key,
            &self.ledger.network(),
            &DealAcceptance {
                proposal: proposal.id(),
            },
        )
        .unwrap();
        Input::PublishDeal {
            proposal,
            acceptance,
            receipt: None,
        }
    }

    /// Publishes a deal both parties signed; returns its id.
    pub fn publish(&mut self, client: &Keypair, provider: &Keypair, terms: Terms) -> DealId {
        let p = self.proposal(client, provider, terms);
        let events = self.apply(self.publish_input(&p, client, provider)).unwrap();
        match events.as_slice() {
            [Event::DealPublished { deal_id, .. }] => *deal_id,
            other => panic!("unexpected events {other:?}"),
        }
    }

    fn piece_of(&self, deal_id: DealId) -> usize {
        let d = self.deal(deal_id);
        self.pieces
            .iter()
            .position(|p| blake3::hash(p).as_bytes() == &d.proposal.piece.0)
            .unwrap()
    }

    /// Seals the deal's piece as the ledger expects and returns the signed
    /// commitment, signed by `signer`.
    pub fn pre_commit_input(&mut self, deal_id: DealId, signer: &Keypair) -> Input {
        let d = self.deal(deal_id);
        let i = self.piece_of(deal_id);
        let rid = replica_id(
            &provider_hash(&d.proposal.provider),
            &d.proposal.piece.0,
            deal_id,
            &d.ticket,
        );
        let sealed = seal(&self.pieces[i], &rid, &self.params(), &self.parents[i]).unwrap();
        let c = SealCommitment {
            deal_id,
            piece: d.proposal.piece,
            comm_r: sealed.commitments.comm_r,
            replica_id: rid,
        };
        self.sealed.insert(deal_id, sealed);
        Input::PreCommit(Signed::sign(signer, &self.ledger.network(), &c).unwrap())
    }

    /// Whether a pre-commit was built for the deal (its replica exists).
    pub fn has_sealed(&self, deal_id: DealId) -> bool {
        self.sealed.contains_key(&deal_id)
    }

    /// A seal proof with `seed` (the ledger's seed when `None`).
    pub fn seal_proof_input(&mut self, deal_id: DealId, signer: &Keypair, seed: Option<[u8; 32]>) -> Input {
        let d = self.deal(deal_id);
        let seed = seed.unwrap_or(match d.state {
            DealState::PreCommitted { seed: Some(s), .. } => s,
            _ => [0; 32],
        });
        let i = self.piece_of(deal_id);
        let sealed = &self.sealed[&deal_id];
        let proof = prove_seal(&self.pieces[i], sealed, &self.params(), &self.parents[i], &seed).unwrap();
        let msg = SealProofMsg {
            deal_id,
            proof: proof.encode(),
        };
        Input::SealProof(Signed::sign(signer, &self.ledger.network(), &msg).unwrap())
    }

    /// A window proof for `epoch` with `randomness` (the open epoch's when `None`).
    pub fn window_proof_input(
        &self,
        deal_id: DealId,
        signer: &Keypair,
        epoch: Epoch,
        randomness: Option<[u8; 32]>,
    ) -> Input {
        let sealed = &self.sealed[&deal_id];
        let randomness = randomness.unwrap_or(self.ledger.randomness());
        let proof = prove_window(
            sealed.replica.as_slice(),
            &sealed.replica_outboard,
            &sealed.commitments.comm_c,
            &self.params(),
            deal_id,
            epoch,
            &randomness,
        )
        .unwrap();
        let msg = WindowProofMsg {
            deal_id,
            epoch,
            proof: proof.encode(),
        };
        Input::WindowProof(Signed::sign(signer, &self.ledger.network(), &msg).unwrap())
    }

    pub fn prove_window(&mut self, deal_id: DealId, provider: &Keypair) -> Vec<Event> {
        let input = self.window_proof_input(deal_id, provider, self.ledger.epoch(), None);
        self.apply(input).unwrap()
    }

    pub fn end_epoch_input(&self) -> Input {
        sign_epoch(&self.tracker, self.ledger.epoch(), &self.ledger.head()).unwrap()
    }

    pub fn end_epoch(&mut self) -> Vec<Event> {
        let input = self.end_epoch_input();
        self.apply(input).unwrap()
    }

    /// Pre-commit, wait for the seed, prove the seal: the deal is active.
    pub fn onboard(&mut self, deal_id: DealId, provider: &Keypair) {
        let input = self.pre_commit_input(deal_id, provider);
        self.apply(input).unwrap();
        let events = self.end_epoch();
        assert!(events
            .iter()
            .any(|e| matches!(e, Event::SealSeed { deal_id: d, .. } if *d == deal_id)));
        let input = self.seal_proof_input(deal_id, provider, None);
        assert_eq!(self.apply(input).unwrap(), vec![Event::Proven { deal_id }]);
    }

    /// `client` registers `deals` (by piece index) as one file needing `k`.
    pub fn register_file_input(&self, client: &Keypair, deals: &[DealId], k: u32) -> Input {
        let mut root = b"root".to_vec();
        for d in deals {
            root.extend_from_slice(&d.to_le_bytes());
        }
        let reg = FileRegistration {
            root,
            manifest: *blake3::hash(format!("{deals:?}").as_bytes()).as_bytes(),
            data_pieces: k,
            deals: deals.to_vec(),
        };
        Input::RegisterFile(Signed::sign(client, &self.ledger.network(), &reg).unwrap())
    }

    /// Registers a file; returns its id.
    pub fn register_file(&mut self, client: &Keypair, deals: &[DealId], k: u32) -> FileId {
        let events = self.apply(self.register_file_input(client, deals, k)).unwrap();
        match events.as_slice() {
            [Event::FileRegistered { file_id, .. }] => *file_id,
            other => panic!("unexpected events {other:?}"),
        }
    }

    pub fn remove_input(&mut self, signer: &Keypair, file_id: FileId) -> Input {
        let nonce = self.next_nonce(signer);
        Input::RemoveFile(
            Signed::sign(signer, &self.ledger.network(), &RemoveRequest { file_id, nonce }).unwrap(),
        )
    }

    pub fn renew_input(&mut self, signer: &Keypair, file_id: FileId, epochs: u64) -> Input {
        let nonce = self.next_nonce(signer);
        Input::RenewFile(
            Signed::sign(
                signer,
                &self.ledger.network(),
                &RenewRequest {
                    file_id,
                    epochs,
                    nonce,
                },
            )
            .unwrap(),
        )
    }

    /// A repair deal for `index` of `file_id` with `provider` at `price`,
    /// starting [`crowd_tracker::MIN_START_LEAD`] from now and running to
    /// the file's end; the job signed by `job_signer` (the tracker, for an
    /// honest one), the acceptance by `acceptor`.
    pub fn repair_input(
        &mut self,
        file_id: FileId,
        index: u32,
        provider: &Keypair,
        price: Amount,
        job_signer: &Keypair,
        acceptor: &Keypair,
    ) -> Option<Input> {
        let f = self.ledger.file(file_id)?.clone();
        let slot = f.slots.get(index as usize)?.clone();
        let epoch = self.ledger.epoch();
        let start = epoch + crowd_tracker::MIN_START_LEAD;
        self.proposal_nonce += 1;
        let job = RepairJob {
            file_id,
            index: u64::from(index),
            manifest: f.manifest,
            proposal: DealProposal {
                piece: slot.piece,
                piece_size: slot.piece_size,
                client: f.client.0,
                provider: provider.public().to_peer_id(),
                price_per_epoch: price,
                start_epoch: start,
                duration_epochs: f.end_epoch.saturating_sub(start).max(1),
                provider_collateral: 100,
                expiry_epoch: epoch + 1,
                nonce: self.proposal_nonce,
            },
            sources: vec![],
        };
        let job = Signed::sign(job_signer, &self.ledger.network(), &job).unwrap();
        let acceptance = Signed::sign(
            acceptor,
            &self.ledger.network(),
            &DealAcceptance { proposal: job.id() },
        )
        .unwrap();
        Some(Input::PublishRepair { job, acceptance })
    }

    /// The tracker's (or, forged, `signer`'s) finding that piece `index`
    /// of `file_id` was served wrong by its current provider, in the open
    /// epoch.
    pub fn retrieval_fault_input(&self, file_id: FileId, index: u32, signer: &Keypair) -> Option<Input> {
        let f = self.ledger.file(file_id)?;
        let deal = self.ledger.deal(f.slots.get(index as usize)?.deal)?;
        let audit = RetrievalAudit {
            file_id,
            index,
            provider: deal.provider(),
            epoch: self.ledger.epoch(),
            offset: 0,
            accuser: id(&key(98)),
        };
        Some(Input::RetrievalFault(
            Signed::sign(signer, &self.ledger.network(), &audit).unwrap(),
        ))
    }

    /// Ends epochs until `epoch` is the open one.
    pub fn run_to(&mut self, epoch: Epoch) -> Vec<Event> {
        let mut all = Vec::new();
        while self.ledger.epoch() < epoch {
            all.extend(self.end_epoch());
        }
        all
    }

    /// The log replays to exactly the live ledger.
    pub fn assert_replays(&self) {
        let replayed = replay(self.ledger.config().clone(), &self.log).unwrap();
        replayed.verify_against(&self.ledger).unwrap();
        assert_eq!(replayed, self.ledger);
    }
}

/// Deal terms for [`World::proposal`].
#[derive(Debug, Clone, Copy)]
pub struct Terms {
    pub piece: usize,
    pub price: Amount,
    pub lead: u64,
    pub duration: u64,
    pub collateral: Amount,
}

impl Default for Terms {
    fn default() -> Self {
        Self {
            piece: 0,
            price: 10,
            lead: 3,
            duration: 4,
            collateral: 1_000,
        }
    }
}
