//! The ledger state machine: validation and settlement.
//!
//! Every handler works on a [`Tx`]: it reads through to the ledger, writes
//! into an overlay of the records it touches, and fails with a typed error
//! before anything is committed. [`Ledger::apply_logged`] commits the overlay
//! (plain inserts, which cannot fail) only when the whole input succeeded, so
//! a refused input leaves the ledger exactly as it was.

use std::collections::BTreeMap;

use crowd_porep::graph::MAX_NODES;
use crowd_porep::proof::{verify_seal, verify_window};
use crowd_porep::{SealProof, SealPublic, WindowProof, WindowPublic};
use crowd_protocol::{
    Amount, DealAcceptance, DealProposal, Epoch, FileRegistration, NetworkId, PieceReceipt, ProposalId,
    ProtocolError, RemoveRequest, RenewRequest, RepairJob, Signable, Signed,
};
use serde::{Deserialize, Serialize};

use crate::error::LedgerError;
use crate::log::{cbor, events_hash, genesis_head, LogEntry};
use crate::types::*;

/// A proposal id as a map key (CBOR byte string).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct ProposalKey(#[serde(with = "crowd_protocol::wire::hash32")] Hash32);

/// The tracker's ledger. See the crate documentation for the rules.
///
/// It serialises (CBOR) for snapshots; a snapshot read back is untrusted:
/// run [`Ledger::check_invariants`], or better replay the log and
/// [`Ledger::verify_against`] the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    config: LedgerConfig,
    /// The open (unsettled) epoch.
    epoch: Epoch,
    /// The open epoch's randomness.
    #[serde(with = "crowd_protocol::wire::hash32")]
    randomness: Hash32,
    #[serde(with = "crowd_protocol::wire::hash32")]
    head: Hash32,
    log_len: u64,
    next_deal_id: DealId,
    mints: u64,
    supply: Supply,
    accounts: BTreeMap<AccountId, Account>,
    providers: BTreeMap<AccountId, ProviderInfo>,
    deals: BTreeMap<DealId, Deal>,
    proposals: BTreeMap<ProposalKey, DealId>,
    #[serde(default)]
    next_file_id: FileId,
    #[serde(default)]
    files: BTreeMap<FileId, File>,
    /// Every deal registered in a file (originals and repairs): its file
    /// and piece index.
    #[serde(default)]
    deal_files: BTreeMap<DealId, (FileId, u32)>,
    /// Deals and files moved out of this state (see "Archive").
    #[serde(default)]
    archived_deals: u64,
    #[serde(default)]
    archived_files: u64,
    /// Proposals whose escrow is locked before publication (paid admission).
    #[serde(default)]
    admissions: BTreeMap<ProposalKey, AdmissionLock>,
}

/// `amount × bps / 10 000`, rounded down, without overflow for any `u128`.
pub fn bps_of(amount: Amount, bps: u32) -> Amount {
    let bps = Amount::from(bps.min(BPS));
    let unit = Amount::from(BPS);
    (amount / unit) * bps + (amount % unit) * bps / unit
}

fn derive(context: &str, hash: &Hash32, deal_id: DealId) -> Hash32 {
    *blake3::Hasher::new_derive_key(context)
        .update(hash)
        .update(&deal_id.to_le_bytes())
        .finalize()
        .as_bytes()
}

/// The sealing ticket of a deal published in an epoch with `randomness`.
pub fn ticket(randomness: &Hash32, deal_id: DealId) -> Hash32 {
    derive("crowdstore tracker ticket v1", randomness, deal_id)
}

/// The seal seed of a deal pre-committed in an epoch whose successor has `randomness`.
pub fn seal_seed(randomness: &Hash32, deal_id: DealId) -> Hash32 {
    derive("crowdstore tracker seal seed v1", randomness, deal_id)
}

fn expect_signer(what: &'static str, signer: AccountId, expected: AccountId) -> Result<(), LedgerError> {
    if signer != expected {
        return Err(LedgerError::WrongSigner {
            what,
            signer: signer.to_string(),
            expected: expected.to_string(),
        });
    }
    Ok(())
}

fn add(a: Amount, b: Amount, what: &'static str) -> Result<Amount, LedgerError> {
    a.checked_add(b).ok_or(LedgerError::Overflow { what })
}

/// Subtraction that must succeed by the ledger's own bookkeeping.
fn sub_locked(a: Amount, b: Amount, what: &str) -> Result<Amount, LedgerError> {
    a.checked_sub(b)
        .ok_or_else(|| LedgerError::InvariantViolated(format!("{what}: {a} < {b}")))
}

/// Moves a file's repair fund from the client's locked escrow back to its
/// free balance.
fn release_fund(tx: &mut Tx<'_>, file: &mut File) -> Result<Amount, LedgerError> {
    let fund = file.repair_fund;
    tx.update_account(file.client, |a| {
        a.locked_escrow = sub_locked(a.locked_escrow, fund, "locked escrow")?;
        a.available = add(a.available, fund, "account balance")?;
        Ok(())
    })?;
    file.repair_fund = 0;
    Ok(fund)
}

/// Moves `amount` of the file's client's free balance into the file's
/// repair fund (locked escrow).
fn fund_repair(tx: &mut Tx<'_>, file: &mut File, amount: Amount) -> Result<(), LedgerError> {
    tx.update_account(file.client, |a| {
        a.available = sub_locked(a.available, amount, "account balance")?;
        a.locked_escrow = add(a.locked_escrow, amount, "locked escrow")?;
        Ok(())
    })?;
    file.repair_fund = add(file.repair_fund, amount, "repair fund")?;
    Ok(())
}

/// An input's changes, not yet committed: reads fall through to `base`.
struct Tx<'a> {
    base: &'a Ledger,
    changes: Changes,
}

/// A planned input's changes, detached from the ledger they were planned on.
struct Changes {
    accounts: BTreeMap<AccountId, Account>,
    providers: BTreeMap<AccountId, ProviderInfo>,
    deals: BTreeMap<DealId, Deal>,
    proposals: Vec<(ProposalKey, DealId)>,
    files: BTreeMap<FileId, File>,
    deal_files: Vec<(DealId, (FileId, u32))>,
    admitted: Vec<(ProposalKey, AdmissionLock)>,
    /// Admissions used by a publication or lapsed.
    unadmitted: Vec<ProposalKey>,
    /// Deals and files leaving the state (end of epoch only).
    leaving_deals: Vec<DealId>,
    leaving_files: Vec<FileId>,
    next_file_id: FileId,
    supply: Supply,
    epoch: Epoch,
    randomness: Hash32,
    next_deal_id: DealId,
    mints: u64,
    events: Vec<Event>,
}

impl std::ops::Deref for Tx<'_> {
    type Target = Changes;
    fn deref(&self) -> &Changes {
        &self.changes
    }
}

impl std::ops::DerefMut for Tx<'_> {
    fn deref_mut(&mut self) -> &mut Changes {
        &mut self.changes
    }
}

impl<'a> Tx<'a> {
    fn into_changes(self) -> Changes {
        self.changes
    }

    fn new(base: &'a Ledger) -> Self {
        Self {
            base,
            changes: Changes {
                accounts: BTreeMap::new(),
                providers: BTreeMap::new(),
                deals: BTreeMap::new(),
                proposals: Vec::new(),
                files: BTreeMap::new(),
                deal_files: Vec::new(),
                admitted: Vec::new(),
                unadmitted: Vec::new(),
                leaving_deals: Vec::new(),
                leaving_files: Vec::new(),
                next_file_id: base.next_file_id,
                supply: base.supply,
                epoch: base.epoch,
                randomness: base.randomness,
                next_deal_id: base.next_deal_id,
                mints: base.mints,
                events: Vec::new(),
            },
        }
    }

    fn account(&self, id: AccountId) -> Account {
        self.accounts
            .get(&id)
            .or_else(|| self.base.accounts.get(&id))
            .cloned()
            .unwrap_or_default()
    }

    fn update_account(
        &mut self,
        id: AccountId,
        f: impl FnOnce(&mut Account) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        let mut a = self.account(id);
        f(&mut a)?;
        self.accounts.insert(id, a);
        Ok(())
    }

    fn credit(&mut self, id: AccountId, amount: Amount) -> Result<(), LedgerError> {
        self.update_account(id, |a| {
            a.available = add(a.available, amount, "account balance")?;
            Ok(())
        })
    }

    fn debit(&mut self, id: AccountId, amount: Amount) -> Result<(), LedgerError> {
        self.update_account(id, |a| {
            a.available = a
                .available
                .checked_sub(amount)
                .ok_or(LedgerError::InsufficientFunds {
                    account: id.to_string(),
                    need: amount,
                    have: a.available,
                })?;
            Ok(())
        })
    }

    /// Checks and advances an account's nonce.
    fn take_nonce(&mut self, id: AccountId, nonce: u64, what: &'static str) -> Result<(), LedgerError> {
        self.update_account(id, |a| {
            if nonce < a.nonce {
                return Err(LedgerError::Duplicate { what });
            }
            if nonce > a.nonce {
                return Err(LedgerError::NonceGap {
                    expected: a.nonce,
                    got: nonce,
                });
            }
            a.nonce = a
                .nonce
                .checked_add(1)
                .ok_or(LedgerError::Overflow { what: "nonce" })?;
            Ok(())
        })
    }

    fn admission(&self, key: &ProposalKey) -> Option<AdmissionLock> {
        if self.unadmitted.contains(key) {
            return None;
        }
        self.admitted
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, lock)| lock.clone())
            .or_else(|| self.base.admissions.get(key).cloned())
    }

    /// Gives an admission's escrow back to its client's free balance.
    fn unadmit(&mut self, key: ProposalKey, lock: &AdmissionLock) -> Result<(), LedgerError> {
        self.update_account(lock.client, |a| {
            a.locked_escrow = sub_locked(a.locked_escrow, lock.escrow, "locked escrow")?;
            a.available = add(a.available, lock.escrow, "account balance")?;
            Ok(())
        })?;
        self.unadmitted.push(key);
        Ok(())
    }

    fn provider(&self, id: AccountId) -> Option<ProviderInfo> {
        self.providers
            .get(&id)
            .or_else(|| self.base.providers.get(&id))
            .cloned()
    }

    fn release_capacity(&mut self, id: AccountId, size: u64) -> Result<(), LedgerError> {
        let mut p = self
            .provider(id)
            .ok_or_else(|| LedgerError::InvariantViolated(format!("deal of unregistered provider {id}")))?;
        p.used = p
            .used
            .checked_sub(size)
            .ok_or_else(|| LedgerError::InvariantViolated(format!("provider {id} used below zero")))?;
        self.providers.insert(id, p);
        Ok(())
    }

    fn file(&self, id: FileId) -> Result<File, LedgerError> {
        self.files
            .get(&id)
            .or_else(|| self.base.files.get(&id))
            .cloned()
            .ok_or(LedgerError::UnknownFile(id))
    }

    /// The file and index a deal holds, if it is registered in a file
    /// (including a registration earlier in this input).
    fn deal_file(&self, id: DealId) -> Option<(FileId, u32)> {
        self.deal_files
            .iter()
            .find(|(d, _)| *d == id)
            .map(|(_, at)| *at)
            .or_else(|| self.base.deal_files.get(&id).copied())
    }

    fn deal(&self, id: DealId) -> Result<Deal, LedgerError> {
        self.deals
            .get(&id)
            .or_else(|| self.base.deals.get(&id))
            .cloned()
            .ok_or(LedgerError::UnknownDeal(id))
    }

    /// Moves a deal's remaining escrow and collateral back to the free
    /// balances of client and provider, and frees the provider's capacity.
    fn release_all(&mut self, deal: &mut Deal) -> Result<(Amount, Amount), LedgerError> {
        let (escrow, collateral) = (deal.escrow, deal.collateral);
        self.update_account(deal.client(), |a| {
            a.locked_escrow = sub_locked(a.locked_escrow, escrow, "locked escrow")?;
            a.available = add(a.available, escrow, "account balance")?;
            Ok(())
        })?;
        self.update_account(deal.provider(), |a| {
            a.locked_collateral = sub_locked(a.locked_collateral, collateral, "locked collateral")?;
            a.available = add(a.available, collateral, "account balance")?;
            Ok(())
        })?;
        self.release_capacity(deal.provider(), deal.proposal.piece_size)?;
        deal.escrow = 0;
        deal.collateral = 0;
        Ok((escrow, collateral))
    }

    fn burn(&mut self, amount: Amount) -> Result<(), LedgerError> {
        self.supply.burned = add(self.supply.burned, amount, "burned supply")?;
        Ok(())
    }
}

impl Ledger {
    /// A new ledger at epoch 0 with an empty log. Epoch 0's randomness is
    /// derived from the genesis head (it is known in advance; no deal can be
    /// challenged before epoch [`MIN_START_LEAD`]).
    pub fn new(config: LedgerConfig) -> Result<Self, LedgerError> {
        config.validate()?;
        let head = genesis_head(&config);
        let randomness = *blake3::Hasher::new_derive_key("crowdstore tracker genesis randomness v1")
            .update(&head)
            .finalize()
            .as_bytes();
        // money in: the genesis allocations (validated: positive, each
        // account once, no overflow)
        let mut supply = Supply::default();
        let mut accounts = BTreeMap::new();
        for (account, amount) in &config.allocations {
            supply.minted = add(supply.minted, *amount, "minted supply")?;
            accounts.insert(
                *account,
                Account {
                    available: *amount,
                    ..Account::default()
                },
            );
        }
        Ok(Self {
            config,
            epoch: 0,
            randomness,
            head,
            log_len: 0,
            next_deal_id: 0,
            mints: 0,
            supply,
            accounts,
            providers: BTreeMap::new(),
            deals: BTreeMap::new(),
            proposals: BTreeMap::new(),
            next_file_id: 0,
            archived_deals: 0,
            archived_files: 0,
            admissions: BTreeMap::new(),
            files: BTreeMap::new(),
            deal_files: BTreeMap::new(),
        })
    }

    pub fn config(&self) -> &LedgerConfig {
        &self.config
    }

    /// The network every signed input must name: the genesis head.
    pub fn network(&self) -> NetworkId {
        NetworkId(genesis_head(&self.config))
    }

    /// Opens an envelope signed for this network, without a fixed signer
    /// (the signer may depend on the body).
    fn open<T: Signable>(&self, signed: &Signed<T>) -> Result<(AccountId, T), LedgerError> {
        let (signer, body) = signed.open(&self.network(), None)?;
        Ok((AccountId(signer), body))
    }

    /// The open epoch: window proofs are for it, `EndEpoch` settles it.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The open epoch's randomness (window challenges, tickets).
    pub fn randomness(&self) -> Hash32 {
        self.randomness
    }

    /// The log head: what the tracker signs to end the epoch.
    pub fn head(&self) -> Hash32 {
        self.head
    }

    /// Entries in the log so far (the index of the next one).
    pub fn log_len(&self) -> u64 {
        self.log_len
    }

    /// Faucet mints so far (the nonce of the next `Mint`).
    pub fn mints(&self) -> u64 {
        self.mints
    }

    pub fn supply(&self) -> Supply {
        self.supply
    }

    /// An account (all zero if it never held anything).
    pub fn account(&self, id: &AccountId) -> Account {
        self.accounts.get(id).cloned().unwrap_or_default()
    }

    pub fn accounts(&self) -> impl Iterator<Item = (&AccountId, &Account)> {
        self.accounts.iter()
    }

    pub fn provider(&self, id: &AccountId) -> Option<&ProviderInfo> {
        self.providers.get(id)
    }

    pub fn providers(&self) -> impl Iterator<Item = (&AccountId, &ProviderInfo)> {
        self.providers.iter()
    }

    pub fn deal(&self, id: DealId) -> Option<&Deal> {
        self.deals.get(&id)
    }

    /// Every deal ever published, live or finished, by id.
    pub fn deals(&self) -> impl Iterator<Item = &Deal> {
        self.deals.values()
    }

    pub fn file(&self, id: FileId) -> Option<&File> {
        self.files.get(&id)
    }

    /// Every registered file, by id.
    pub fn files(&self) -> impl Iterator<Item = &File> {
        self.files.values()
    }

    /// The file and piece index a deal holds, if any.
    /// Deals and files moved out of the state so far (see "Archive").
    pub fn archived(&self) -> (u64, u64) {
        (self.archived_deals, self.archived_files)
    }

    pub fn deal_file(&self, deal: DealId) -> Option<(FileId, u32)> {
        self.deal_files.get(&deal).copied()
    }

    /// Whether piece `index` of a live file has no live deal (it needs a
    /// repair). False for unknown files and indexes.
    pub fn is_lost(&self, file: FileId, index: u32) -> bool {
        self.files.get(&file).is_some_and(|f| {
            f.state == FileState::Live
                && f.slots
                    .get(index as usize)
                    .is_some_and(|slot| !self.deals.get(&slot.deal).is_some_and(|d| d.state.is_live()))
        })
    }

    /// Lost piece indexes of live files whose term has at least one epoch
    /// after the earliest start a repair deal can have, fewest healthy
    /// pieces first: `(file, index, healthy)`.
    pub fn lost_slots(&self) -> Vec<(FileId, u32, usize)> {
        let earliest = self.epoch.saturating_add(MIN_START_LEAD);
        let mut lost = Vec::new();
        for f in self.files.values() {
            if f.state != FileState::Live || f.end_epoch <= earliest {
                continue;
            }
            let live = |slot: &Slot| self.deals.get(&slot.deal).is_some_and(|d| d.state.is_live());
            let healthy = f.slots.iter().filter(|s| live(s)).count();
            for (i, slot) in f.slots.iter().enumerate() {
                if !live(slot) {
                    lost.push((f.id, i as u32, healthy));
                }
            }
        }
        lost.sort_by_key(|&(f, i, healthy)| (healthy, f, i));
        lost
    }

    /// The deal a signed proposal became, if published.
    /// The escrow locked for an admitted, not yet published proposal.
    pub fn admission(&self, proposal: &ProposalId) -> Option<&AdmissionLock> {
        self.admissions.get(&ProposalKey(*proposal))
    }

    /// How many admitted proposals are waiting for publication.
    pub fn admissions(&self) -> usize {
        self.admissions.len()
    }

    pub fn deal_by_proposal(&self, proposal: &Hash32) -> Option<&Deal> {
        self.proposals
            .get(&ProposalKey(*proposal))
            .and_then(|id| self.deals.get(id))
    }

    /// A hash of the whole state (CBOR), to compare a replay with a snapshot.
    pub fn state_hash(&self) -> Hash32 {
        *blake3::Hasher::new_derive_key("crowdstore tracker state v1")
            .update(&cbor(self))
            .finalize()
            .as_bytes()
    }

    /// Applies one input: either all of it, or nothing and a typed error.
    pub fn apply(&mut self, input: Input) -> Result<Vec<Event>, LedgerError> {
        self.apply_logged(input).map(|(_, events)| events)
    }

    /// [`Ledger::apply`], also returning the log entry to persist.
    pub fn apply_logged(&mut self, input: Input) -> Result<(LogEntry, Vec<Event>), LedgerError> {
        self.next_log_len()?;
        let changes = self.plan(&input)?.into_changes();
        self.commit(input, changes)
    }

    /// Applies a batch of inputs, each exactly as [`Ledger::apply_logged`]
    /// would in order, verifying the seal and window proofs among them in
    /// parallel.
    ///
    /// Every `WindowProof` / `SealProof` is first planned (signature opened,
    /// proof verified) against the ledger as it is before the batch, in
    /// parallel; then the inputs are committed one by one in order. A proof
    /// only reads its own deal, the open epoch, its randomness and the
    /// config, and only writes its deal, so its plan still holds unless an
    /// earlier input of the batch changed that deal or was not a proof (which
    /// may change the epoch); such plans, and every non-proof input, are
    /// planned again at their turn. The results, the state and the head equal
    /// sequential `apply_logged` of the same inputs.
    pub fn apply_proofs_logged(
        &mut self,
        inputs: Vec<Input>,
    ) -> Vec<Result<(LogEntry, Vec<Event>), LedgerError>> {
        use rayon::prelude::*;
        type Plan = Option<(Option<DealId>, Result<Changes, LedgerError>)>;
        let planned: Vec<Plan> = {
            let this = &*self;
            inputs
                .par_iter()
                .map(|input| {
                    let deal = match input {
                        Input::WindowProof(s) => self.open(s).ok().map(|(_, m)| m.deal_id),
                        Input::SealProof(s) => self.open(s).ok().map(|(_, m)| m.deal_id),
                        _ => return None,
                    };
                    Some((deal, this.plan(input).map(Tx::into_changes)))
                })
                .collect()
        };
        let mut changed: std::collections::BTreeSet<DealId> = std::collections::BTreeSet::new();
        let mut any_other = false;
        let mut results = Vec::with_capacity(inputs.len());
        for (input, plan) in inputs.into_iter().zip(planned) {
            let result = match plan {
                Some((deal, plan)) => {
                    // an envelope that does not open (no deal) fails alike in any state
                    let fresh = !any_other && deal.is_none_or(|d| !changed.contains(&d));
                    let result = if fresh {
                        // the order of checks of `apply_logged`
                        self.next_log_len()
                            .and(plan)
                            .and_then(|changes| self.commit(input, changes))
                    } else {
                        self.apply_logged(input)
                    };
                    if result.is_ok() {
                        changed.extend(deal);
                    }
                    result
                }
                None => {
                    let result = self.apply_logged(input);
                    any_other |= result.is_ok();
                    result
                }
            };
            results.push(result);
        }
        results
    }

    fn next_log_len(&self) -> Result<u64, LedgerError> {
        self.log_len
            .checked_add(1)
            .ok_or(LedgerError::Overflow { what: "log index" })
    }

    /// Commits a planned input's changes and logs it.
    fn commit(&mut self, input: Input, changes: Changes) -> Result<(LogEntry, Vec<Event>), LedgerError> {
        let log_len = self.next_log_len()?;
        let Changes {
            accounts,
            providers,
            deals,
            proposals,
            files,
            deal_files,
            admitted,
            unadmitted,
            leaving_deals,
            leaving_files,
            next_file_id,
            supply,
            epoch,
            randomness,
            next_deal_id,
            mints,
            events,
        } = changes;
        self.accounts.extend(accounts);
        self.providers.extend(providers);
        self.deals.extend(deals);
        self.proposals.extend(proposals);
        self.files.extend(files);
        self.deal_files.extend(deal_files);
        self.admissions.extend(admitted);
        for key in &unadmitted {
            self.admissions.remove(key);
        }
        for id in &leaving_deals {
            if let Some(d) = self.deals.remove(id) {
                self.proposals.remove(&ProposalKey(d.proposal_id));
            }
            self.deal_files.remove(id);
        }
        for id in &leaving_files {
            self.files.remove(id);
        }
        // counts: at most one per deal / file ever created
        self.archived_deals += leaving_deals.len() as u64;
        self.archived_files += leaving_files.len() as u64;
        self.next_file_id = next_file_id;
        self.supply = supply;
        self.epoch = epoch;
        self.randomness = randomness;
        self.next_deal_id = next_deal_id;
        self.mints = mints;
        let entry = LogEntry {
            index: self.log_len,
            prev_head: self.head,
            input,
            events_hash: events_hash(&events),
        };
        self.head = entry.head();
        self.log_len = log_len;
        Ok((entry, events))
    }

    fn plan(&self, input: &Input) -> Result<Tx<'_>, LedgerError> {
        let mut tx = Tx::new(self);
        match input {
            Input::Mint {
                account,
                amount,
                nonce,
            } => self.mint(&mut tx, *account, *amount, *nonce)?,
            Input::Withdraw(signed) => self.withdraw(&mut tx, signed)?,
            Input::Transfer(signed) => self.transfer(&mut tx, signed)?,
            Input::RegisterProvider(signed) => self.register(&mut tx, signed)?,
            Input::AdmitProposal(signed) => self.admit(&mut tx, signed)?,
            Input::PublishDeal {
                proposal,
                acceptance,
                receipt,
            } => self.publish(&mut tx, proposal, acceptance, receipt.as_ref())?,
            Input::PreCommit(signed) => self.pre_commit(&mut tx, signed)?,
            Input::SealProof(signed) => self.seal_proof(&mut tx, signed)?,
            Input::WindowProof(signed) => self.window_proof(&mut tx, signed)?,
            Input::RegisterFile(signed) => self.register_file(&mut tx, signed)?,
            Input::RemoveFile(signed) => self.remove_file(&mut tx, signed)?,
            Input::RenewFile(signed) => self.renew_file(&mut tx, signed)?,
            Input::PublishRepair { job, acceptance } => self.publish_repair(&mut tx, job, acceptance)?,
            Input::RetrievalFault(signed) => self.retrieval_fault(&mut tx, signed)?,
            Input::EndEpoch {
                epoch,
                tracker_signature,
            } => self.end_epoch(&mut tx, *epoch, tracker_signature)?,
        }
        Ok(tx)
    }

    fn mint(
        &self,
        tx: &mut Tx<'_>,
        account: AccountId,
        amount: Amount,
        nonce: u64,
    ) -> Result<(), LedgerError> {
        if !self.config.faucet {
            return Err(LedgerError::FaucetDisabled);
        }
        if nonce < self.mints {
            return Err(LedgerError::Duplicate { what: "mint" });
        }
        if nonce > self.mints {
            return Err(LedgerError::NonceGap {
                expected: self.mints,
                got: nonce,
            });
        }
        if amount == 0 {
            return Err(LedgerError::ZeroAmount { what: "mint" });
        }
        tx.supply.minted = add(tx.supply.minted, amount, "minted supply")?;
        tx.credit(account, amount)?;
        tx.mints = self
            .mints
            .checked_add(1)
            .ok_or(LedgerError::Overflow { what: "mints" })?;
        tx.events.push(Event::Minted { account, amount });
        Ok(())
    }

    fn withdraw(&self, tx: &mut Tx<'_>, signed: &Signed<WithdrawRequest>) -> Result<(), LedgerError> {
        let (account, req) = self.open(signed)?;
        tx.take_nonce(account, req.nonce, "withdrawal")?;
        if req.amount == 0 {
            return Err(LedgerError::ZeroAmount { what: "withdrawal" });
        }
        tx.debit(account, req.amount)?;
        tx.supply.withdrawn = add(tx.supply.withdrawn, req.amount, "withdrawn supply")?;
        tx.events.push(Event::Withdrawn {
            account,
            amount: req.amount,
        });
        Ok(())
    }

    /// Moves free balance from the signer to another account.
    fn transfer(&self, tx: &mut Tx<'_>, signed: &Signed<TransferRequest>) -> Result<(), LedgerError> {
        let (from, req) = self.open(signed)?;
        tx.take_nonce(from, req.nonce, "transfer")?;
        if req.amount == 0 {
            return Err(LedgerError::ZeroAmount { what: "transfer" });
        }
        let to = AccountId(req.to);
        if to == from {
            return Err(LedgerError::SelfTransfer);
        }
        tx.debit(from, req.amount)?;
        tx.credit(to, req.amount)?;
        tx.events.push(Event::Transferred {
            from,
            to,
            amount: req.amount,
        });
        Ok(())
    }

    fn register(&self, tx: &mut Tx<'_>, signed: &Signed<ProviderRegistration>) -> Result<(), LedgerError> {
        let (provider, reg) = self.open(signed)?;
        tx.take_nonce(provider, reg.nonce, "registration")?;
        let used = tx.provider(provider).map_or(0, |p| p.used);
        let staked = tx.account(provider).staked;
        if reg.capacity > 0 {
            // offering space locks the stake (topped up after a slash)
            let need = self.config.provider_stake.saturating_sub(staked);
            if need > 0 {
                tx.debit(provider, need)?;
                tx.update_account(provider, |a| {
                    a.staked = add(a.staked, need, "stake")?;
                    Ok(())
                })?;
                tx.events.push(Event::Staked {
                    provider,
                    amount: need,
                });
            }
        } else if used == 0 && staked > 0 {
            // leaving with no live deal: the stake comes back
            tx.update_account(provider, |a| {
                a.available = add(a.available, staked, "account balance")?;
                a.staked = 0;
                Ok(())
            })?;
            tx.events.push(Event::StakeReturned {
                provider,
                amount: staked,
            });
        }
        tx.providers.insert(
            provider,
            ProviderInfo {
                capacity: reg.capacity,
                price_per_gib_epoch: reg.price_per_gib_epoch,
                collateral_per_gib: reg.collateral_per_gib,
                used,
            },
        );
        tx.events.push(Event::ProviderRegistered {
            provider,
            capacity: reg.capacity,
            price_per_gib_epoch: reg.price_per_gib_epoch,
            collateral_per_gib: reg.collateral_per_gib,
        });
        Ok(())
    }

    fn publish(
        &self,
        tx: &mut Tx<'_>,
        proposal: &Signed<DealProposal>,
        acceptance: &Signed<DealAcceptance>,
        receipt: Option<&Signed<PieceReceipt>>,
    ) -> Result<(), LedgerError> {
        let (client_signer, p) = self.open(proposal)?;
        let client = AccountId(p.client);
        let provider = AccountId(p.provider);
        expect_signer(DealProposal::DOMAIN, client_signer, client)?;
        let (provider_signer, a) = self.open(acceptance)?;
        expect_signer(DealAcceptance::DOMAIN, provider_signer, provider)?;
        let proposal_id = proposal.id();
        if a.proposal != proposal_id {
            return Err(LedgerError::AcceptanceMismatch);
        }
        // the piece the deal is for: the proposal's, or its provider's
        // receipt's when the proposal names none
        let p = match receipt {
            Some(receipt) => {
                let (provider_signer, r) = self.open(receipt)?;
                expect_signer(PieceReceipt::DOMAIN, provider_signer, provider)?;
                p.named_by(&proposal_id, &r).map_err(|e| match e {
                    ProtocolError::ReceiptMismatch(why) => LedgerError::InvalidProposal(why),
                    other => other.into(),
                })?
            }
            None if !p.names_piece() => {
                return Err(LedgerError::InvalidProposal(
                    "a proposal that names no piece is published with its provider's receipt",
                ))
            }
            None => p,
        };
        if self.proposals.contains_key(&ProposalKey(proposal_id)) {
            return Err(LedgerError::Duplicate { what: "deal" });
        }
        // an admitted proposal's escrow is locked already: hand it back, and
        // open_deal locks it again for the deal (the same amount)
        if let Some(lock) = tx.admission(&ProposalKey(proposal_id)) {
            tx.unadmit(ProposalKey(proposal_id), &lock)?;
        }
        self.open_deal(tx, proposal_id, p, None).map(|_| ())
    }

    /// Locks a proposal's escrow until its last publishable epoch (paid
    /// admission). The proposal must be publishable now on its terms and
    /// cost something; the provider must be registered (its capacity and
    /// collateral are taken at publication).
    fn admit(&self, tx: &mut Tx<'_>, signed: &Signed<DealProposal>) -> Result<(), LedgerError> {
        let (signer, p) = self.open(signed)?;
        let client = AccountId(p.client);
        expect_signer(DealProposal::DOMAIN, signer, client)?;
        let key = ProposalKey(signed.id());
        if self.proposals.contains_key(&key) || self.admissions.contains_key(&key) {
            return Err(LedgerError::Duplicate { what: "admission" });
        }
        let escrow = self.check_terms(&p)?;
        if escrow == 0 {
            return Err(LedgerError::ZeroAmount {
                what: "admission escrow",
            });
        }
        let provider = AccountId(p.provider);
        if tx.provider(provider).is_none() {
            return Err(LedgerError::NotRegistered(provider.to_string()));
        }
        tx.debit(client, escrow)?;
        tx.update_account(client, |a| {
            a.locked_escrow = add(a.locked_escrow, escrow, "locked escrow")?;
            Ok(())
        })?;
        let until_epoch = publish_deadline(&p);
        tx.admitted.push((
            key,
            AdmissionLock {
                client,
                escrow,
                until_epoch,
            },
        ));
        tx.events.push(Event::Admitted {
            proposal: key.0,
            client,
            escrow,
            until_epoch,
        });
        Ok(())
    }

    /// The publication rules a proposal's own terms must meet in the open
    /// epoch; returns its escrow (price × duration).
    fn check_terms(&self, p: &DealProposal) -> Result<Amount, LedgerError> {
        if self.epoch > p.expiry_epoch {
            return Err(LedgerError::Expired {
                expiry: p.expiry_epoch,
                current: self.epoch,
            });
        }
        if p.piece_size == 0 {
            return Err(LedgerError::InvalidProposal("empty piece"));
        }
        if p.piece_size > MAX_NODES * 32 {
            return Err(LedgerError::InvalidProposal(
                "piece larger than a sealable replica",
            ));
        }
        if p.duration_epochs == 0 {
            return Err(LedgerError::InvalidProposal("zero duration"));
        }
        if p.start_epoch < self.epoch.saturating_add(MIN_START_LEAD) {
            return Err(LedgerError::InvalidProposal(
                "starts too soon to be sealed and proven",
            ));
        }
        // a far-future start would lock the provider's collateral (and the
        // client's escrow) long before any work is due
        if p.start_epoch > self.epoch.saturating_add(MAX_START_LEAD) {
            return Err(LedgerError::InvalidProposal("starts too far in the future"));
        }
        p.start_epoch
            .checked_add(p.duration_epochs)
            .ok_or(LedgerError::Overflow {
                what: "deal end epoch",
            })?;
        let floor = crowd_protocol::tracker::pro_rata(self.config.min_collateral_per_gib, p.piece_size);
        if p.provider_collateral < floor {
            return Err(LedgerError::InvalidProposal(
                "provider collateral below the network's minimum",
            ));
        }
        p.price_per_epoch
            .checked_mul(Amount::from(p.duration_epochs))
            .ok_or(LedgerError::Overflow { what: "deal escrow" })
    }

    /// Validates a proposal both parties agreed to and opens its deal:
    /// capacity, escrow (from the client's free balance, or for a repair
    /// from `repair`'s fund first) and collateral locked, id and ticket
    /// drawn. Returns the deal id and the escrow it locked.
    fn open_deal(
        &self,
        tx: &mut Tx<'_>,
        proposal_id: ProposalId,
        p: DealProposal,
        repair: Option<&mut File>,
    ) -> Result<(DealId, Amount, Amount), LedgerError> {
        let client = AccountId(p.client);
        let provider = AccountId(p.provider);
        let escrow = self.check_terms(&p)?;

        let mut info = tx
            .provider(provider)
            .ok_or_else(|| LedgerError::NotRegistered(provider.to_string()))?;
        let staked = tx.account(provider).staked;
        if staked < self.config.provider_stake {
            return Err(LedgerError::NotStaked {
                provider: provider.to_string(),
                staked,
                required: self.config.provider_stake,
            });
        }
        let free = info.capacity.saturating_sub(info.used);
        if p.piece_size > free {
            return Err(LedgerError::CapacityExceeded {
                provider: provider.to_string(),
                free,
                need: p.piece_size,
            });
        }
        info.used += p.piece_size; // <= capacity, cannot overflow
        tx.providers.insert(provider, info);

        // a repair's escrow comes from the file's fund (already locked)
        // first, the rest from the client's free balance
        let from_fund = repair.map_or(0, |file| {
            let take = file.repair_fund.min(escrow);
            file.repair_fund -= take; // take <= fund
            take
        });
        let from_balance = escrow - from_fund; // from_fund <= escrow
        tx.debit(client, from_balance)?;
        tx.update_account(client, |a| {
            a.locked_escrow = add(a.locked_escrow, from_balance, "locked escrow")?;
            Ok(())
        })?;
        tx.debit(provider, p.provider_collateral)?;
        tx.update_account(provider, |a| {
            a.locked_collateral = add(a.locked_collateral, p.provider_collateral, "locked collateral")?;
            Ok(())
        })?;

        let deal_id = tx.next_deal_id;
        tx.next_deal_id = deal_id
            .checked_add(1)
            .ok_or(LedgerError::Overflow { what: "deal id" })?;
        let ticket = ticket(&self.randomness, deal_id);
        tx.proposals.push((ProposalKey(proposal_id), deal_id));
        tx.deals.insert(
            deal_id,
            Deal {
                id: deal_id,
                proposal_id,
                published_epoch: self.epoch,
                ticket,
                state: DealState::Published,
                escrow,
                collateral: p.provider_collateral,
                paid: 0,
                last_paid_epoch: None,
                consecutive_faults: 0,
                total_faults: 0,
                extension_epochs: 0,
                retrieval_fault_epoch: None,
                proposal: p,
            },
        );
        tx.events.push(Event::DealPublished {
            deal_id,
            proposal: proposal_id,
            ticket,
        });
        Ok((deal_id, from_fund, from_balance))
    }

    fn register_file(&self, tx: &mut Tx<'_>, signed: &Signed<FileRegistration>) -> Result<(), LedgerError> {
        let (client, r) = self.open(signed)?;
        let invalid = LedgerError::InvalidFile;
        if r.deals.is_empty() || r.deals.len() > MAX_FILE_PIECES {
            return Err(invalid("a file has 1 to 256 pieces"));
        }
        if r.data_pieces == 0 || r.data_pieces as usize > r.deals.len() {
            return Err(invalid("data pieces must be between 1 and the number of pieces"));
        }
        if r.root.is_empty() || r.root.len() > 128 {
            return Err(invalid("root CID of 1 to 128 bytes"));
        }
        let mut slots = Vec::with_capacity(r.deals.len());
        let mut end_epoch = 0;
        for (i, &id) in r.deals.iter().enumerate() {
            let deal = tx.deal(id)?;
            if deal.client() != client {
                return Err(invalid("a deal of the file is not the signer's"));
            }
            if !deal.state.is_live() {
                return Err(LedgerError::WrongState {
                    deal_id: id,
                    state: deal.state.name(),
                    expected: "live",
                });
            }
            if r.deals[..i].contains(&id) {
                return Err(invalid("a deal is listed twice"));
            }
            if tx.deal_file(id).is_some() {
                return Err(LedgerError::Duplicate {
                    what: "file registration",
                });
            }
            end_epoch = end_epoch.max(deal.end_epoch());
            slots.push(Slot {
                piece: deal.proposal.piece,
                piece_size: deal.proposal.piece_size,
                deal: id,
            });
        }
        let file_id = tx.next_file_id;
        tx.next_file_id = file_id
            .checked_add(1)
            .ok_or(LedgerError::Overflow { what: "file id" })?;
        for (i, &id) in r.deals.iter().enumerate() {
            tx.deal_files.push((id, (file_id, i as u32))); // i < 256
        }
        tx.files.insert(
            file_id,
            File {
                id: file_id,
                client,
                root: r.root,
                manifest: r.manifest,
                data_pieces: r.data_pieces,
                slots,
                end_epoch,
                state: FileState::Live,
                repair_fund: 0,
                repairs: 0,
                repair_cost: 0,
            },
        );
        tx.events.push(Event::FileRegistered { file_id, client });
        Ok(())
    }

    /// A live file of `signer`'s.
    fn own_live_file(&self, tx: &Tx<'_>, signer: AccountId, id: FileId) -> Result<File, LedgerError> {
        let file = tx.file(id)?;
        if file.client != signer {
            return Err(LedgerError::NotOwner { file_id: id });
        }
        if file.state != FileState::Live {
            return Err(LedgerError::FileNotLive {
                file_id: id,
                state: file.state.name(),
            });
        }
        Ok(file)
    }

    fn remove_file(&self, tx: &mut Tx<'_>, signed: &Signed<RemoveRequest>) -> Result<(), LedgerError> {
        let (signer, r) = self.open(signed)?;
        let mut file = self.own_live_file(tx, signer, r.file_id)?;
        tx.take_nonce(signer, r.nonce, "removal")?;
        let mut refund: Amount = 0;
        for slot in &file.slots {
            let mut deal = tx.deal(slot.deal)?;
            if !deal.state.is_live() {
                continue;
            }
            let (escrow, collateral) = tx.release_all(&mut deal)?;
            deal.state = DealState::Removed;
            refund = add(refund, escrow, "refund")?;
            tx.events.push(Event::Removed {
                deal_id: deal.id,
                refund: escrow,
                collateral_returned: collateral,
            });
            tx.deals.insert(deal.id, deal);
        }
        refund = add(refund, file.repair_fund, "refund")?;
        release_fund(tx, &mut file)?;
        file.state = FileState::Removed;
        tx.events.push(Event::FileRemoved {
            file_id: file.id,
            refund,
        });
        tx.files.insert(file.id, file);
        Ok(())
    }

    fn renew_file(&self, tx: &mut Tx<'_>, signed: &Signed<RenewRequest>) -> Result<(), LedgerError> {
        let (signer, r) = self.open(signed)?;
        let mut file = self.own_live_file(tx, signer, r.file_id)?;
        tx.take_nonce(signer, r.nonce, "renewal")?;
        if r.epochs == 0 || r.epochs > MAX_RENEW_EPOCHS {
            return Err(LedgerError::InvalidFile("renew by 1 to 1000000 epochs"));
        }
        let end_epoch = file
            .end_epoch
            .checked_add(r.epochs)
            .ok_or(LedgerError::Overflow {
                what: "file end epoch",
            })?;
        let mut locked: Amount = 0;
        for slot in &file.slots {
            let mut deal = tx.deal(slot.deal)?;
            if !deal.state.is_live() {
                continue; // a lost index: its repair deal runs to the new end
            }
            // every live deal of the file runs to the file's end
            let more = end_epoch.saturating_sub(deal.end_epoch());
            let extra = deal
                .proposal
                .price_per_epoch
                .checked_mul(Amount::from(more))
                .ok_or(LedgerError::Overflow {
                    what: "renewal escrow",
                })?;
            tx.debit(signer, extra)?;
            tx.update_account(signer, |a| {
                a.locked_escrow = add(a.locked_escrow, extra, "locked escrow")?;
                Ok(())
            })?;
            deal.escrow = add(deal.escrow, extra, "deal escrow")?;
            deal.extension_epochs = deal.extension_epochs.saturating_add(more);
            locked = add(locked, extra, "renewal escrow")?;
            tx.deals.insert(deal.id, deal);
        }
        file.end_epoch = end_epoch;
        tx.events.push(Event::FileRenewed {
            file_id: file.id,
            end_epoch,
            locked,
        });
        tx.files.insert(file.id, file);
        Ok(())
    }

    fn publish_repair(
        &self,
        tx: &mut Tx<'_>,
        job: &Signed<RepairJob>,
        acceptance: &Signed<DealAcceptance>,
    ) -> Result<(), LedgerError> {
        let tracker = AccountId(self.config.tracker_public_key()?.to_peer_id());
        let (signer, j) = self.open(job)?;
        expect_signer(RepairJob::DOMAIN, signer, tracker)?;
        let (provider_signer, a) = self.open(acceptance)?;
        expect_signer(
            DealAcceptance::DOMAIN,
            provider_signer,
            AccountId(j.proposal.provider),
        )?;
        let job_id = job.id();
        if a.proposal != job_id {
            return Err(LedgerError::AcceptanceMismatch);
        }
        if self.proposals.contains_key(&ProposalKey(job_id)) {
            return Err(LedgerError::Duplicate { what: "repair" });
        }
        let mut file = tx.file(j.file_id)?;
        if file.state != FileState::Live {
            return Err(LedgerError::FileNotLive {
                file_id: file.id,
                state: file.state.name(),
            });
        }
        let bad = LedgerError::InvalidRepair;
        let index = u32::try_from(j.index).map_err(|_| bad("piece index out of range"))?;
        let slot = file
            .slots
            .get(index as usize)
            .cloned()
            .ok_or(bad("piece index out of range"))?;
        if tx.deal(slot.deal)?.state.is_live() {
            return Err(bad("the piece is not lost"));
        }
        let p = &j.proposal;
        if AccountId(p.client) != file.client {
            return Err(bad("the deal's client is not the file's owner"));
        }
        if p.piece != slot.piece || p.piece_size != slot.piece_size {
            return Err(bad("the deal is for another piece"));
        }
        for other in &file.slots {
            let d = tx.deal(other.deal)?;
            if d.state.is_live() && d.provider() == AccountId(p.provider) {
                return Err(bad("the provider already holds a piece of the file"));
            }
        }
        if p.start_epoch.checked_add(p.duration_epochs) != Some(file.end_epoch) {
            return Err(bad("a repair deal runs to the file's end epoch"));
        }
        let (deal_id, from_fund, from_balance) = self.open_deal(tx, job_id, j.proposal, Some(&mut file))?;
        let slot = &mut file.slots[index as usize]; // checked above
        slot.deal = deal_id;
        file.repairs = file.repairs.saturating_add(1);
        file.repair_cost = add(file.repair_cost, from_fund, "repair cost")?;
        file.repair_cost = add(file.repair_cost, from_balance, "repair cost")?;
        tx.deal_files.push((deal_id, (file.id, index)));
        tx.events.push(Event::RepairPublished {
            file_id: file.id,
            index,
            deal_id,
            from_fund,
            from_balance,
        });
        tx.files.insert(file.id, file);
        Ok(())
    }

    fn pre_commit(
        &self,
        tx: &mut Tx<'_>,
        signed: &Signed<crowd_protocol::SealCommitment>,
    ) -> Result<(), LedgerError> {
        let (signer, c) = self.open(signed)?;
        let mut deal = tx.deal(c.deal_id)?;
        expect_signer("seal-commitment", signer, deal.provider())?;
        match &deal.state {
            DealState::Published => {}
            DealState::PreCommitted {
                comm_r, replica_id, ..
            } if *comm_r == c.comm_r && *replica_id == c.replica_id => {
                return Err(LedgerError::Duplicate { what: "pre-commit" })
            }
            other => {
                return Err(LedgerError::WrongState {
                    deal_id: deal.id,
                    state: other.name(),
                    expected: "published",
                })
            }
        }
        if c.piece != deal.proposal.piece {
            return Err(LedgerError::PieceMismatch { deal_id: deal.id });
        }
        let expected = crowd_porep::seal::replica_id(
            &provider_hash(&deal.proposal.provider),
            &deal.proposal.piece.0,
            deal.id,
            &deal.ticket,
        );
        if c.replica_id != expected {
            return Err(LedgerError::ReplicaIdMismatch { deal_id: deal.id });
        }
        deal.state = DealState::PreCommitted {
            comm_r: c.comm_r,
            replica_id: c.replica_id,
            epoch: self.epoch,
            seed: None,
        };
        tx.events.push(Event::PreCommitted {
            deal_id: deal.id,
            comm_r: c.comm_r,
        });
        tx.deals.insert(deal.id, deal);
        Ok(())
    }

    fn seal_proof(
        &self,
        tx: &mut Tx<'_>,
        signed: &Signed<crowd_protocol::SealProofMsg>,
    ) -> Result<(), LedgerError> {
        let (signer, msg) = self.open(signed)?;
        let mut deal = tx.deal(msg.deal_id)?;
        expect_signer("seal-proof", signer, deal.provider())?;
        let (comm_r, replica_id, seed) = match &deal.state {
            DealState::PreCommitted {
                comm_r,
                replica_id,
                seed: Some(seed),
                ..
            } => (*comm_r, *replica_id, *seed),
            DealState::PreCommitted {
                epoch, seed: None, ..
            } => {
                return Err(LedgerError::FutureEpoch {
                    what: "seal proof (its seed is the next epoch's randomness)",
                    epoch: epoch.saturating_add(1),
                    current: self.epoch,
                })
            }
            DealState::Active { .. } => return Err(LedgerError::Duplicate { what: "seal proof" }),
            other => {
                return Err(LedgerError::WrongState {
                    deal_id: deal.id,
                    state: other.name(),
                    expected: "pre-committed",
                })
            }
        };
        let invalid = |source| LedgerError::InvalidProof {
            deal_id: msg.deal_id,
            what: "seal proof",
            source,
        };
        let proof = SealProof::decode(&msg.proof).map_err(invalid)?;
        let public = SealPublic {
            piece_len: deal.proposal.piece_size,
            comm_d: deal.proposal.piece.0,
            comm_r,
            replica_id,
            seed,
        };
        verify_seal(&public, &self.config.params, &proof).map_err(invalid)?;
        deal.state = DealState::Active {
            comm_r,
            proven_epoch: None,
        };
        tx.events.push(Event::Proven { deal_id: deal.id });
        tx.deals.insert(deal.id, deal);
        Ok(())
    }

    fn window_proof(
        &self,
        tx: &mut Tx<'_>,
        signed: &Signed<crowd_protocol::WindowProofMsg>,
    ) -> Result<(), LedgerError> {
        let (signer, msg) = self.open(signed)?;
        let mut deal = tx.deal(msg.deal_id)?;
        expect_signer("window-proof", signer, deal.provider())?;
        let DealState::Active { comm_r, proven_epoch } = deal.state else {
            return Err(LedgerError::WrongState {
                deal_id: deal.id,
                state: deal.state.name(),
                expected: "active",
            });
        };
        let what = "window proof";
        self.in_open_epoch(what, msg.epoch)?;
        if msg.epoch < deal.proposal.start_epoch || msg.epoch >= deal.end_epoch() {
            return Err(LedgerError::NotChallenged {
                deal_id: deal.id,
                epoch: msg.epoch,
            });
        }
        if proven_epoch == Some(msg.epoch) {
            return Err(LedgerError::Duplicate { what });
        }
        let invalid = |source| LedgerError::InvalidProof {
            deal_id: msg.deal_id,
            what,
            source,
        };
        let proof = WindowProof::decode(&msg.proof).map_err(invalid)?;
        let public = WindowPublic {
            piece_len: deal.proposal.piece_size,
            comm_r,
            deal_id: deal.id,
            epoch: msg.epoch,
            randomness: self.randomness,
        };
        verify_window(&public, &self.config.params, &proof).map_err(invalid)?;
        deal.state = DealState::Active {
            comm_r,
            proven_epoch: Some(msg.epoch),
        };
        tx.events.push(Event::WindowProven {
            deal_id: deal.id,
            epoch: msg.epoch,
        });
        tx.deals.insert(deal.id, deal);
        Ok(())
    }

    fn end_epoch(&self, tx: &mut Tx<'_>, epoch: Epoch, signature: &[u8]) -> Result<(), LedgerError> {
        self.in_open_epoch("end of epoch", epoch)?;
        let key = self.config.tracker_public_key()?;
        if !key.verify(&epoch_signing_input(epoch, &self.head), signature) {
            return Err(LedgerError::BadEpochSignature { epoch });
        }
        let next_epoch = epoch
            .checked_add(1)
            .ok_or(LedgerError::Overflow { what: "epoch" })?;
        let next_randomness = randomness_from_signature(signature);

        for deal in self.deals.values().filter(|d| d.state.is_live()) {
            let mut deal = deal.clone();
            self.settle(tx, &mut deal, epoch, &next_randomness)?;
            tx.deals.insert(deal.id, deal);
        }
        // admissions that can no longer be published: the escrow goes back
        for (key, lock) in self.admissions.iter().filter(|(_, l)| l.until_epoch <= epoch) {
            tx.unadmit(*key, lock)?;
            tx.events.push(Event::AdmissionLapsed {
                proposal: key.0,
                client: lock.client,
                refund: lock.escrow,
            });
        }
        // files whose term is over: the unused repair fund goes back
        for file in self.files.values().filter(|f| f.state == FileState::Live) {
            if epoch.saturating_add(1) >= file.end_epoch {
                let mut file = tx.file(file.id)?; // settlement may have grown its fund
                let refund = release_fund(tx, &mut file)?;
                file.state = FileState::Expired;
                tx.events.push(Event::FileExpired {
                    file_id: file.id,
                    refund,
                });
                tx.files.insert(file.id, file);
            }
        }
        if self.config.archive_ended {
            self.archive(tx, next_epoch)?;
        }
        tx.epoch = next_epoch;
        tx.randomness = next_randomness;
        tx.events.push(Event::EpochEnded {
            epoch,
            randomness: next_randomness,
        });
        Ok(())
    }

    /// Settles one live deal at the end of `epoch`.
    fn settle(
        &self,
        tx: &mut Tx<'_>,
        deal: &mut Deal,
        epoch: Epoch,
        next_randomness: &Hash32,
    ) -> Result<(), LedgerError> {
        let deal_id = deal.id;
        let start = deal.proposal.start_epoch;
        match deal.state.clone() {
            DealState::Published | DealState::PreCommitted { .. } if start <= epoch.saturating_add(1) => {
                // Not proven before its start: cancel, return everything
                // (a live file's escrow to its repair fund: the index is lost).
                let (escrow, collateral) = tx.release_all(deal)?;
                if let Some(mut file) = self.live_file_of(tx, deal.id)? {
                    fund_repair(tx, &mut file, escrow)?;
                    tx.files.insert(file.id, file);
                }
                deal.state = DealState::Cancelled;
                tx.events.push(Event::Cancelled {
                    deal_id,
                    escrow_returned: escrow,
                    collateral_returned: collateral,
                });
            }
            DealState::PreCommitted {
                comm_r,
                replica_id,
                epoch: committed,
                seed: None,
            } if committed == epoch => {
                let seed = seal_seed(next_randomness, deal_id);
                deal.state = DealState::PreCommitted {
                    comm_r,
                    replica_id,
                    epoch: committed,
                    seed: Some(seed),
                };
                tx.events.push(Event::SealSeed { deal_id, seed });
            }
            DealState::Active { proven_epoch, .. } if epoch >= start => {
                if deal.retrieval_fault_epoch == Some(epoch) {
                    // faulted already in this epoch (bad bytes served): not paid
                } else if proven_epoch == Some(epoch) {
                    self.pay(tx, deal, epoch)?;
                } else if self.fault(tx, deal, epoch)? {
                    return Ok(());
                }
                if epoch.saturating_add(1) >= deal.end_epoch() {
                    let (refund, collateral) = tx.release_all(deal)?;
                    deal.state = DealState::Completed;
                    tx.events.push(Event::Completed {
                        deal_id,
                        collateral_returned: collateral,
                        refund,
                    });
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn pay(&self, tx: &mut Tx<'_>, deal: &mut Deal, epoch: Epoch) -> Result<(), LedgerError> {
        if deal.last_paid_epoch.is_some_and(|last| last >= epoch) {
            return Err(LedgerError::InvariantViolated(format!(
                "deal {} paid twice for epoch {epoch}",
                deal.id
            )));
        }
        let price = deal.proposal.price_per_epoch;
        deal.escrow = sub_locked(deal.escrow, price, "deal escrow")?;
        deal.paid = add(deal.paid, price, "deal paid")?;
        deal.last_paid_epoch = Some(epoch);
        deal.consecutive_faults = 0;
        tx.update_account(deal.client(), |a| {
            a.locked_escrow = sub_locked(a.locked_escrow, price, "locked escrow")?;
            Ok(())
        })?;
        tx.credit(deal.provider(), price)?;
        tx.events.push(Event::Paid {
            deal_id: deal.id,
            epoch,
            amount: price,
        });
        Ok(())
    }

    /// Records a fault; returns whether it terminated the deal.
    fn fault(&self, tx: &mut Tx<'_>, deal: &mut Deal, epoch: Epoch) -> Result<bool, LedgerError> {
        let fee = bps_of(deal.proposal.provider_collateral, self.config.fault_fee_bps).min(deal.collateral);
        deal.collateral -= fee; // fee <= collateral
        tx.update_account(deal.provider(), |a| {
            a.locked_collateral = sub_locked(a.locked_collateral, fee, "locked collateral")?;
            Ok(())
        })?;
        tx.burn(fee)?;
        deal.consecutive_faults = deal.consecutive_faults.saturating_add(1);
        deal.total_faults = deal.total_faults.saturating_add(1);
        tx.events.push(Event::Faulted {
            deal_id: deal.id,
            epoch,
            fee,
            consecutive: deal.consecutive_faults,
        });
        let file = self.live_file_of(tx, deal.id)?;
        let threshold = if file.is_some() {
            self.config.repair_threshold()
        } else {
            self.config.fault_threshold
        };
        if deal.consecutive_faults < threshold {
            return Ok(false);
        }
        // Slash what is left: a share to the client, the rest burned; refund
        // the unearned escrow.
        let slashed = deal.collateral;
        let compensation = bps_of(slashed, self.config.client_share_bps);
        let burned = slashed - compensation; // compensation <= slashed
        let refund = deal.escrow;
        tx.update_account(deal.provider(), |a| {
            a.locked_collateral = sub_locked(a.locked_collateral, slashed, "locked collateral")?;
            Ok(())
        })?;
        tx.update_account(deal.client(), |a| {
            a.locked_escrow = sub_locked(a.locked_escrow, refund, "locked escrow")?;
            a.available = add(a.available, refund, "account balance")?;
            a.available = add(a.available, compensation, "account balance")?;
            Ok(())
        })?;
        tx.burn(burned)?;
        tx.release_capacity(deal.provider(), deal.proposal.piece_size)?;
        // the provider's stake pays for the termination too (burned)
        let stake_cut = bps_of(self.config.provider_stake, self.config.stake_slash_bps)
            .min(tx.account(deal.provider()).staked);
        if stake_cut > 0 {
            tx.update_account(deal.provider(), |a| {
                a.staked -= stake_cut; // stake_cut <= staked
                Ok(())
            })?;
            tx.burn(stake_cut)?;
            tx.events.push(Event::StakeSlashed {
                provider: deal.provider(),
                deal_id: deal.id,
                amount: stake_cut,
            });
        }
        // a live file keeps both for its repair: they pay the new deal first
        let at = match file {
            Some(mut file) => {
                let at = tx.deal_file(deal.id);
                fund_repair(tx, &mut file, refund)?;
                fund_repair(tx, &mut file, compensation)?;
                tx.files.insert(file.id, file);
                at
            }
            None => None,
        };
        deal.collateral = 0;
        deal.escrow = 0;
        deal.state = DealState::Terminated;
        tx.events.push(Event::Terminated {
            deal_id: deal.id,
            client_compensation: compensation,
            burned,
            refund,
        });
        tx.events.push(Event::RepairNeeded {
            deal_id: deal.id,
            piece: deal.proposal.piece,
            piece_size: deal.proposal.piece_size,
            client: deal.client(),
            file: at,
        });
        Ok(true)
    }

    /// Refuses a message for a settled epoch (`Stale`) or a later one.
    fn in_open_epoch(&self, what: &'static str, epoch: Epoch) -> Result<(), LedgerError> {
        if epoch < self.epoch {
            return Err(LedgerError::Stale {
                what,
                epoch,
                current: self.epoch,
            });
        }
        if epoch > self.epoch {
            return Err(LedgerError::FutureEpoch {
                what,
                epoch,
                current: self.epoch,
            });
        }
        Ok(())
    }

    /// `RetrievalFault`: the tracker's own audit found the provider of a
    /// file's piece serving bytes that are not the piece's.
    fn retrieval_fault(&self, tx: &mut Tx<'_>, signed: &Signed<RetrievalAudit>) -> Result<(), LedgerError> {
        let tracker = AccountId(self.config.tracker_public_key()?.to_peer_id());
        let (signer, a) = self.open(signed)?;
        expect_signer(RetrievalAudit::DOMAIN, signer, tracker)?;
        let what = "retrieval fault";
        self.in_open_epoch(what, a.epoch)?;
        let file = tx.file(a.file_id)?;
        if file.state != FileState::Live {
            return Err(LedgerError::FileNotLive {
                file_id: file.id,
                state: file.state.name(),
            });
        }
        let bad = LedgerError::InvalidFault;
        let slot = file
            .slots
            .get(a.index as usize)
            .ok_or(bad("piece index out of range"))?;
        let mut deal = tx.deal(slot.deal)?;
        if deal.provider() != a.provider {
            return Err(bad("the provider does not hold that piece"));
        }
        if !matches!(deal.state, DealState::Active { .. }) || self.epoch < deal.proposal.start_epoch {
            return Err(LedgerError::WrongState {
                deal_id: deal.id,
                state: deal.state.name(),
                expected: "active",
            });
        }
        if deal.retrieval_fault_epoch == Some(self.epoch) {
            return Err(LedgerError::Duplicate { what });
        }
        deal.retrieval_fault_epoch = Some(self.epoch);
        tx.events.push(Event::RetrievalFaulted {
            deal_id: deal.id,
            epoch: self.epoch,
            offset: a.offset,
            accuser: a.accuser,
        });
        self.fault(tx, &mut deal, self.epoch)?;
        tx.deals.insert(deal.id, deal);
        Ok(())
    }

    /// Moves ended deals and finished files out of the state at the end of
    /// an epoch (`next` is the epoch about to open). A deal goes when it is
    /// final (not live), no live file's slot names it (a lost index keeps
    /// its deal until the repair replaces it), and its proposal can never
    /// be published again (`next` is past its expiry, or too late for its
    /// start), so forgetting its proposal id opens no replay. A finished
    /// file goes with all of its deals at once, when every one can go.
    fn archive(&self, tx: &mut Tx<'_>, next: Epoch) -> Result<(), LedgerError> {
        let can_go = |d: &Deal| {
            !d.state.is_live()
                && (next > d.proposal.expiry_epoch
                    || next.saturating_add(MIN_START_LEAD) > d.proposal.start_epoch)
        };
        let mut of_file: BTreeMap<FileId, Vec<DealId>> = BTreeMap::new();
        for (deal, (file, _)) in &self.deal_files {
            of_file.entry(*file).or_default().push(*deal);
        }
        let mut deals = Vec::new();
        let mut files = Vec::new();
        for id in self.deals.keys() {
            let d = tx.deal(*id)?;
            if !can_go(&d) {
                continue;
            }
            match tx.deal_file(*id) {
                None => deals.push(d),
                Some((file_id, index)) => {
                    let f = tx.file(file_id)?;
                    if f.state == FileState::Live && f.slots.get(index as usize).map(|s| s.deal) != Some(*id)
                    {
                        deals.push(d); // replaced by a repair
                    }
                }
            }
        }
        for id in self.files.keys() {
            let f = tx.file(*id)?;
            if f.state == FileState::Live {
                continue;
            }
            let mut all = Vec::new();
            for deal in of_file.get(id).into_iter().flatten() {
                all.push(tx.deal(*deal)?);
            }
            if all.iter().all(can_go) {
                deals.extend(all);
                files.push(f);
            }
        }
        if deals.is_empty() && files.is_empty() {
            return Ok(());
        }
        // (commit removes them from the state after applying the rest)
        tx.leaving_deals = deals.iter().map(|d| d.id).collect();
        tx.leaving_files = files.iter().map(|f| f.id).collect();
        tx.events.push(Event::Archived { deals, files });
        Ok(())
    }

    /// The live file a deal holds a piece of, as this input sees it.
    fn live_file_of(&self, tx: &Tx<'_>, deal: DealId) -> Result<Option<File>, LedgerError> {
        match tx.deal_file(deal) {
            Some((id, _)) => {
                let file = tx.file(id)?;
                Ok((file.state == FileState::Live).then_some(file))
            }
            None => Ok(None),
        }
    }

    /// Checks every bookkeeping invariant; the first that fails is named.
    ///
    /// * supply: Σ accounts (free + locked) + burned + withdrawn = minted;
    /// * each account's locked escrow / collateral is the sum over its live deals;
    /// * each provider's used capacity is the sum of its live deals' sizes;
    /// * a live deal's escrow + paid = price × duration, a finished deal locks nothing;
    /// * deal ids are dense from 0 and the proposal index names each deal once.
    pub fn check_invariants(&self) -> Result<(), LedgerError> {
        let bad = |s: String| Err(LedgerError::InvariantViolated(s));
        let mut total: Amount = 0;
        for (id, a) in &self.accounts {
            let Some(t) = a.total().and_then(|t| total.checked_add(t)) else {
                return bad(format!("account {id} overflows the supply"));
            };
            total = t;
        }
        let accounted = total
            .checked_add(self.supply.burned)
            .and_then(|t| t.checked_add(self.supply.withdrawn));
        if accounted != Some(self.supply.minted) {
            return bad(format!(
                "supply not conserved: balances {total} + burned {} + withdrawn {} != minted {}",
                self.supply.burned, self.supply.withdrawn, self.supply.minted
            ));
        }

        let mut escrow: BTreeMap<AccountId, Amount> = BTreeMap::new();
        let mut collateral: BTreeMap<AccountId, Amount> = BTreeMap::new();
        let mut used: BTreeMap<AccountId, u64> = BTreeMap::new();
        for (id, d) in &self.deals {
            if d.id != *id || *id >= self.next_deal_id {
                return bad(format!("deal {id} is not numbered in step"));
            }
            if self.proposals.get(&ProposalKey(d.proposal_id)) != Some(id) {
                return bad(format!("deal {id} missing from the proposal index"));
            }
            if d.collateral > d.proposal.provider_collateral {
                return bad(format!("deal {id} holds more collateral than it locked"));
            }
            if d.state.is_live() {
                let full = d
                    .proposal
                    .price_per_epoch
                    .checked_mul(Amount::from(d.term_epochs()));
                if d.escrow.checked_add(d.paid) != full {
                    return bad(format!(
                        "deal {id}: escrow + paid != price × (duration + renewals)"
                    ));
                }
                let e = escrow.entry(d.client()).or_default();
                let c = collateral.entry(d.provider()).or_default();
                let u = used.entry(d.provider()).or_default();
                match (
                    e.checked_add(d.escrow),
                    c.checked_add(d.collateral),
                    u.checked_add(d.proposal.piece_size),
                ) {
                    (Some(e2), Some(c2), Some(u2)) => (*e, *c, *u) = (e2, c2, u2),
                    _ => return bad(format!("deal {id} overflows its parties' locks")),
                }
            } else if d.escrow != 0 || d.collateral != 0 {
                return bad(format!("finished deal {id} still locks money"));
            }
            if d.last_paid_epoch.is_some_and(|e| e >= self.epoch) {
                return bad(format!("deal {id} paid for an unsettled epoch"));
            }
        }
        for (key, lock) in &self.admissions {
            if self.proposals.contains_key(key) {
                return bad(format!("admission {} of a published deal", hex32(&key.0)));
            }
            if lock.until_epoch < self.epoch {
                return bad(format!("admission {} outlived its last epoch", hex32(&key.0)));
            }
            let e = escrow.entry(lock.client).or_default();
            *e = e
                .checked_add(lock.escrow)
                .ok_or_else(|| LedgerError::InvariantViolated("admissions overflow escrow".into()))?;
        }
        if self.proposals.len() != self.deals.len()
            || self.deals.len() as u64 + self.archived_deals != self.next_deal_id
        {
            return bad("proposal index or next deal id out of step".to_string());
        }
        self.check_files(&mut escrow)?;
        for (id, a) in &self.accounts {
            if a.staked > self.config.provider_stake {
                return bad(format!("account {id} stakes more than the network's stake"));
            }
            if a.locked_escrow != escrow.get(id).copied().unwrap_or(0) {
                return bad(format!("account {id}: locked escrow != its live deals' escrow"));
            }
            if a.locked_collateral != collateral.get(id).copied().unwrap_or(0) {
                return bad(format!(
                    "account {id}: locked collateral != its live deals' collateral"
                ));
            }
        }
        if escrow
            .keys()
            .chain(collateral.keys())
            .any(|id| !self.accounts.contains_key(id))
        {
            return bad("a live deal's party has no account".to_string());
        }
        for (id, p) in &self.providers {
            if p.used != used.get(id).copied().unwrap_or(0) {
                return bad(format!("provider {id}: used capacity != its live deals' sizes"));
            }
        }
        if used.keys().any(|id| !self.providers.contains_key(id)) {
            return bad("a live deal's provider is not registered".to_string());
        }
        Ok(())
    }

    /// The file invariants; adds each live file's repair fund to its
    /// client's expected locked escrow.
    ///
    /// * file ids are below the next one, and with the archived files
    ///   account for every id; only a live file holds a repair fund;
    /// * every slot's deal is registered at that slot, and a registered
    ///   deal's client is the file's owner;
    /// * a live registered deal is its slot's current deal (so no piece
    ///   index ever has two live deals) and belongs to a live file.
    fn check_files(&self, escrow: &mut BTreeMap<AccountId, Amount>) -> Result<(), LedgerError> {
        let bad = |s: String| Err(LedgerError::InvariantViolated(s));
        for (id, f) in &self.files {
            if f.id != *id || *id >= self.next_file_id {
                return bad(format!("file {id} is not numbered in step"));
            }
            if f.state == FileState::Live {
                let e = escrow.entry(f.client).or_default();
                match e.checked_add(f.repair_fund) {
                    Some(sum) => *e = sum,
                    None => return bad(format!("file {id}'s fund overflows its owner's escrow")),
                }
            } else if f.repair_fund != 0 {
                return bad(format!("finished file {id} still holds a repair fund"));
            }
            for (index, slot) in f.slots.iter().enumerate() {
                if self.deal_files.get(&slot.deal) != Some(&(*id, index as u32)) {
                    return bad(format!(
                        "file {id} index {index}: its deal is not registered there"
                    ));
                }
            }
        }
        if self.next_file_id != self.files.len() as u64 + self.archived_files {
            return bad("next file id out of step".to_string());
        }
        for (deal_id, (file_id, index)) in &self.deal_files {
            let (Some(d), Some(f)) = (self.deals.get(deal_id), self.files.get(file_id)) else {
                return bad(format!("deal {deal_id} registered to a missing deal or file"));
            };
            if d.client() != f.client {
                return bad(format!("deal {deal_id} is not its file's owner's"));
            }
            if d.state.is_live() {
                if f.slots.get(*index as usize).map(|s| s.deal) != Some(*deal_id) {
                    return bad(format!(
                        "file {file_id} index {index} has two live deals ({deal_id} is not its current one)"
                    ));
                }
                if f.state != FileState::Live {
                    return bad(format!("deal {deal_id} is live in finished file {file_id}"));
                }
            }
        }
        Ok(())
    }

    /// Compares this (replayed) ledger with a stored one and names the first
    /// difference: head, epoch, supply, an account, a provider or a deal.
    pub fn verify_against(&self, stored: &Ledger) -> Result<(), LedgerError> {
        let differ = |s: String| Err(LedgerError::StateMismatch(s));
        if self.head != stored.head || self.log_len != stored.log_len {
            return differ(format!(
                "head {} after {} entries, stored {} after {}",
                hex32(&self.head),
                self.log_len,
                hex32(&stored.head),
                stored.log_len
            ));
        }
        if self.config != stored.config {
            return differ("config".to_string());
        }
        if (self.epoch, self.randomness) != (stored.epoch, stored.randomness) {
            return differ(format!("epoch {} vs stored {}", self.epoch, stored.epoch));
        }
        if self.supply != stored.supply || self.mints != stored.mints {
            return differ(format!("supply {:?} vs stored {:?}", self.supply, stored.supply));
        }
        for id in self.accounts.keys().chain(stored.accounts.keys()) {
            if self.account(id) != stored.account(id) {
                return differ(format!("account {id}"));
            }
        }
        for id in self.providers.keys().chain(stored.providers.keys()) {
            if self.providers.get(id) != stored.providers.get(id) {
                return differ(format!("provider {id}"));
            }
        }
        for id in self.deals.keys().chain(stored.deals.keys()) {
            if self.deals.get(id) != stored.deals.get(id) {
                return differ(format!("deal {id}"));
            }
        }
        for id in self.files.keys().chain(stored.files.keys()) {
            if self.files.get(id) != stored.files.get(id) {
                return differ(format!("file {id}"));
            }
        }
        if self != stored {
            return differ("another record (the proposal index, or an empty account)".to_string());
        }
        Ok(())
    }
}

fn hex32(h: &Hash32) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn bps_of_proptest(amount in 0..(1u128 << 100), bps in 0..=BPS) {
            // exact below 2^100 (no overflow in the naive formula), never above the amount
            prop_assert_eq!(bps_of(amount, bps), amount * Amount::from(bps) / Amount::from(BPS));
            prop_assert!(bps_of(amount, bps) <= amount);
        }

        #[test]
        fn bps_of_never_exceeds_the_amount_proptest(amount in any::<u128>(), bps in any::<u32>()) {
            prop_assert!(bps_of(amount, bps) <= amount);
        }

        #[test]
        fn tickets_and_seeds_differ_by_deal_and_kind_proptest(r in any::<[u8; 32]>(), a in any::<u64>(), b in any::<u64>()) {
            prop_assume!(a != b);
            prop_assert_ne!(ticket(&r, a), ticket(&r, b));
            prop_assert_ne!(ticket(&r, a), seal_seed(&r, a));
        }
    }
}
