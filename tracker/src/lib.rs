//! # crowd-tracker: the tracker's ledger
//!
//! This crate owns the tracker's money and deal bookkeeping as a **pure,
//! deterministic state machine**: accounts, the deal lifecycle, proving and
//! payment, and the hash-chained log that lets anyone replay it. The ledger
//! has no I/O, no clock, no async and no network: epochs and signed messages
//! come in as [`Input`]s, [`Event`]s come out. Storage (RocksDB), the swarm,
//! when epochs end, and signing tickets, seeds and challenges for providers
//! belong to the tracker **service** (`service` feature, on by default; see
//! [Service](#service) below and the `crowd-tracker` binary).
//!
//! ## State
//!
//! * **Accounts** ([`Account`], keyed by libp2p peer id in a `BTreeMap`):
//!   free balance, escrow locked for deals as client, collateral locked for
//!   deals as provider, and a nonce for the account's own messages. Money is
//!   `u128` base units ([`crowd_protocol::Amount`]); every sum is checked, no
//!   floats anywhere.
//! * **Supply** ([`Supply`]): `minted`, `burned`, `withdrawn`.
//! * **Providers** ([`ProviderInfo`]): registered capacity, asking price, and
//!   bytes under live deals.
//! * **Deals** ([`Deal`]), numbered from 0 in publication order; ended ones
//!   leave the state (see [Archive](#archive)).
//! * **Files** ([`File`]), numbered from 0 in registration order: the deals
//!   holding a stored file's pieces by piece index ([`Slot`]), `k`, the end
//!   of the file's term and its repair fund.
//! * **Epoch** `e` (the open, unsettled epoch), its randomness `R(e)`, the log
//!   head and length.
//!
//! ## Inputs
//!
//! | input | signed by | effect |
//! | --- | --- | --- |
//! | `Mint { account, amount, nonce }` | — (devnet faucet; only if `config.faucet`) | credits `amount`; `nonce` must equal the number of mints so far |
//! | `Withdraw(Signed<WithdrawRequest>)` | the account | moves free balance out (`withdrawn`) |
//! | `Transfer(Signed<TransferRequest>)` | the sender | moves free balance to another account |
//! | `RegisterProvider(Signed<ProviderRegistration>)` | the provider | records capacity and price; locks (tops up) its stake, or returns it when it leaves |
//! | `AdmitProposal(Signed<DealProposal>)` | the client | locks the proposal's escrow until its last publishable epoch (paid admission) |
//! | `PublishDeal { proposal, acceptance, receipt }` | client, provider (a proposal that names no piece: its client, with the provider's receipt) | locks escrow (an admitted proposal's lock is used) and collateral, numbers the deal, draws its ticket |
//! | `PreCommit(Signed<SealCommitment>)` | the deal's provider | records comm_r |
//! | `SealProof(Signed<SealProofMsg>)` | the deal's provider | verifies the seal proof; the deal is active |
//! | `WindowProof(Signed<WindowProofMsg>)` | the deal's provider | verifies the window proof for the open epoch |
//! | `RegisterFile(Signed<FileRegistration>)` | the client of every deal in it | records a file: its live deals by piece index |
//! | `RemoveFile(Signed<RemoveRequest>)` | the file's owner | ends its live deals now (`Removed`), refunds escrow and fund |
//! | `RenewFile(Signed<RenewRequest>)` | the file's owner | moves the file's end by N epochs, locking price × the added epochs per live deal |
//! | `PublishRepair { job, acceptance }` | the tracker (job), the new provider (acceptance) | a new deal for a lost piece index |
//! | `RetrievalFault(Signed<RetrievalAudit>)` | the tracker | the provider of a file's piece served bytes that are not the piece's: a fault in the open epoch, which is not paid |
//! | `EndEpoch { epoch, tracker_signature }` | the tracker (key in [`LedgerConfig`]) | settles the epoch, draws the next randomness |
//!
//! Register, withdraw and transfer carry the account's next nonce
//! ([`Account::nonce`]); a lower nonce is a replay
//! ([`LedgerError::Duplicate`]), a higher one a gap.
//!
//! **Money in and out.** Money enters a ledger only at genesis
//! ([`LedgerConfig::allocations`]: balances the operator lists with
//! `crowd-tracker init --allocate PEER=AMOUNT`, part of the genesis head,
//! so every replay starts from them) or, on development networks only,
//! through the faucet (`Mint`, `config.faucet`). It moves between accounts
//! by `Transfer` (`crowd transfer`), and leaves by `Withdraw` (`crowd
//! withdraw`: a provider's earnings and returned collateral, a client's
//! unused balance; counted in `supply.withdrawn`, paid out by the operator
//! outside the ledger). `minted = balances + burned + withdrawn` always
//! ([`Ledger::check_invariants`]). Deposits after genesis (a bridge, an
//! operator's mint key) and provider deregistration are not here yet.
//!
//! ## Deal lifecycle
//!
//! ```text
//!  PublishDeal ──► Published ──PreCommit──► PreCommitted ──(epoch ends: seed)──SealProof──► Active
//!                      │                         │                                           │
//!                      └── not Active by the start epoch: Cancelled (all locks returned) ◄───┘ (no)
//!  Active, each epoch of [start, start + duration):
//!      valid window proof ─► Paid (price: client escrow → provider)
//!      none / late / invalid ─► Faulted (fee burned) ─ F in a row ─► Terminated + RepairNeeded
//!      after the last epoch ─► Completed (collateral back, unearned escrow back)
//!  RemoveFile ─► Removed (every live deal of the file: escrow and collateral back)
//! ```
//!
//! ## Files: repair, renewal, removal
//!
//! * **Register**: after publishing, the client signs its file's deals by
//!   piece index, with the root and manifest CIDs and `k`. Every deal must
//!   be the signer's, live and in no other file.
//! * **Lost**: a deal holding a live file's piece is terminated after
//!   `repair_after_missed` consecutive faults (config; 2 on the devnet, at
//!   most F), or cancelled if it was never proven by its start; its index
//!   is then *lost* ([`Ledger::lost_slots`], fewest healthy pieces first).
//!   The terminated deal's unearned escrow and the client's share of its
//!   slashed collateral (a cancelled deal's escrow) go into the file's
//!   **repair fund**, still locked as the client's escrow.
//! * **Repair** (`PublishRepair`): a [`crowd_protocol::RepairJob`] signed
//!   by the tracker, accepted over the job's id by the new provider once it
//!   rebuilt and stored the piece. The index must be lost, the deal must
//!   be the file owner's, for the slot's piece and size, with a provider
//!   that holds no live piece of the file, running exactly to the file's
//!   end; the usual publication rules hold (start lead, expiry, capacity,
//!   collateral). **Payment rule**: the deal's escrow (price × remaining
//!   epochs) comes from the file's repair fund first, then from the
//!   client's free balance — the client need not be online; a repair the
//!   two cannot pay is refused. The new deal is sealed, proven and paid
//!   like any other.
//! * **Remove**: every live deal of the file ends now (`Removed`): epochs
//!   already settled stay paid, the open epoch is not paid, the rest of
//!   the escrow and the repair fund go back to the client, collateral back
//!   to the provider; nothing is challenged any more.
//! * **Renew** by N epochs (1 to [`MAX_RENEW_EPOCHS`]): the file's end
//!   moves by N and every live deal is extended to it
//!   ([`Deal::extension_epochs`]) at its own price, locked from the
//!   client's free balance (all or nothing). Providers agreed to a price
//!   per epoch, not to a term: a provider that does not want the longer
//!   term can only stop proving (and lose collateral); consent to
//!   renewals is not modelled yet.
//! * **Expiry**: when the epoch before the file's end is settled, the file
//!   is `Expired` and its unused repair fund goes back to the client.
//! * **Bad repair sources** (`RetrievalFault`): a repairing provider names
//!   the sources whose bytes failed verification, with the 16 KiB group
//!   that failed. An accusation alone does nothing: the tracker service
//!   fetches that group from the accused itself, verified against the
//!   piece CID, and only if it fails for the tracker too does it sign a
//!   [`RetrievalAudit`] (file, index, provider, open epoch, offset,
//!   accuser). The ledger takes it only from the tracker's key, for the
//!   current provider of a live file's index whose deal is active, at most
//!   once per deal and epoch: the deal is **faulted** as for a missed window
//!   (fee burned, streak +1, terminated and repaired at the repair
//!   threshold) and that epoch is **not paid** even if its window proof
//!   verifies ([`Deal::retrieval_fault_epoch`]). The log records the
//!   tracker's word, not the bytes: replaying it trusts the tracker's audit
//!   as it trusts its epoch signatures. A provider that serves the tracker
//!   right and others wrong is not caught this way (every get and repair
//!   still verifies every byte and skips it).
//!
//! ## Archive
//!
//! With `config.archive_ended` (every new genesis), the settlement of each
//! epoch moves out of the state every deal that is final (completed,
//! terminated, cancelled or removed) and whose proposal can never be
//! published again (the next epoch is past its expiry or too late for its
//! start, so forgetting its proposal id opens no replay), unless a live
//! file's slot still names it (a lost index keeps its deal until a repair
//! replaces it); and every removed or expired file together with all its
//! deals, once each of them can go. They leave in one [`Event::Archived`]
//! carrying their last state; the service writes them to its cold archive
//! in the same batch, and answers queries by id from it. Deal and file ids
//! stay unique (`next id = in state + archived`); the hash-chained log
//! keeps the whole history, and a replay archives the same records. Hot
//! state, snapshots and the per-epoch settlement scan grow with live deals
//! and files, not with every deal ever made.
//!
//! * **Stake** (Sybil resistance): registering with capacity above 0 locks
//!   [`LedgerConfig::provider_stake`] from the provider's free balance
//!   ([`Account::staked`]; a re-registration only tops it up); registering
//!   with capacity 0 while no live deal is the provider's returns it
//!   ([`Event::StakeReturned`]). Each termination of one of its deals burns
//!   `stake_slash_bps` of the stake ([`Event::StakeSlashed`]); a deal is
//!   published only with a provider staked in full ([`LedgerError::NotStaked`]),
//!   so a slashed provider re-registers (tops up) before new deals. Every
//!   deal locks at least `min_collateral_per_gib` of provider collateral
//!   (pro rata, rounded up), so no deal is free to abandon. A fresh key is
//!   no provider: it must put the stake at risk first. Clients rank
//!   providers by their record ([`crowd_protocol::ProviderEntry::rank_key`]),
//!   where an unproven newcomer never beats a clean record.
//! * **Admit** (paid admission, in epoch `e`): before a client offers a
//!   proposal to a provider it locks the deal's escrow (`price × duration`,
//!   which must be more than 0) from its free balance; the proposal must be
//!   signed by its client, meet the publication rules below on its own terms
//!   (expiry, size, duration, start lead) and name a registered provider.
//!   The lock ([`AdmissionLock`]) lasts until [`publish_deadline`] — the last
//!   epoch the proposal can be published in, `min(expiry, start − 2)` —
//!   and when that epoch is settled it lapses: the escrow goes back
//!   ([`Event::AdmissionLapsed`]). Publishing an admitted proposal uses its
//!   lock instead of locking again. The service answers each admission with
//!   a tracker-signed [`crowd_protocol::Admission`], which providers require
//!   before they accept a proposal or its bytes: what a client can have
//!   pending on providers is bounded by what it has locked, not by how many
//!   keys it makes. Publication without an admission stays valid for the
//!   ledger (providers decide what they store).
//! * **Publish** (in epoch `e`): the proposal must be signed by the client it
//!   names and the acceptance by the provider it names, over this proposal's
//!   [`Signed::id`](crowd_protocol::Signed::id); a proposal is published at
//!   most once; `e ≤ expiry_epoch`; `piece_size > 0`; `duration > 0`;
//!   `e + 1000 ≥ start ≥ e + 2` ([`MAX_START_LEAD`], [`MIN_START_LEAD`]: pre-commit in `e`, seed at the end
//!   of `e`, prove in `e + 1`); the provider is registered with free capacity.
//!   The client's free balance locks `price × duration`, the provider's locks
//!   `provider_collateral`. Ticket = `derive_key("crowdstore tracker ticket
//!   v1", R(e) ‖ deal_id)`.
//! * **Pre-commit**: the deal is `Published`, the commitment names its piece,
//!   and `replica_id = crowd_porep::seal::replica_id(provider_hash(provider),
//!   comm_d, deal_id, ticket)` ([`provider_hash`]).
//! * **Seal seed**: when the pre-commit epoch `p` ends, seed =
//!   `derive_key("crowdstore tracker seal seed v1", R(p + 1) ‖ deal_id)` —
//!   drawn after comm_r was fixed ([`Event::SealSeed`]).
//! * **Seal proof**: verified with [`crowd_porep::proof::verify_seal`]
//!   against comm_d, comm_r, replica id, seed and `config.params`.
//! * **Deadline**: when epoch `e` ends, every deal not yet active with
//!   `start ≤ e + 1` is **cancelled**: escrow and collateral go back in full.
//! * **Proving**: an active deal is challenged in every epoch of
//!   `[start, start + duration)` with that epoch's randomness. A window proof
//!   for the open epoch is verified with [`crowd_porep::proof::verify_window`]
//!   (deal id, epoch, comm_r, `R(e)`) and recorded; one for a settled epoch is
//!   [`LedgerError::Stale`], for a later one [`LedgerError::FutureEpoch`].
//! * **Settlement** of epoch `e` (deals in id order): a deal proven for `e`
//!   is paid `price_per_epoch` from its escrow to the provider's free balance
//!   and its fault streak resets. Otherwise it is **faulted**:
//!   `fault_fee_bps` of its collateral (capped at what is left) is burned, no
//!   payment. At `fault_threshold` (F) consecutive faults it is
//!   **terminated**: the remaining collateral is slashed (`client_share_bps`
//!   of it to the client, the rest burned), the unearned escrow goes back to
//!   the client, and [`Event::RepairNeeded`] names the piece. A deal whose last
//!   epoch was `e` and survived is **completed**: collateral back to the
//!   provider, whatever escrow faults left unearned back to the client.
//!
//! ## Epochs and randomness
//!
//! `EndEpoch { epoch, tracker_signature }` must be for the open epoch, and the
//! signature must be the tracker's ed25519 signature over
//! [`epoch_signing_input`]`(epoch, head)` where `head` is the log head before
//! it ([`sign_epoch`]). `R(epoch + 1) = derive_key("crowdstore tracker
//! randomness v1", signature)`. The signature depends on every input accepted
//! so far, so nobody but the tracker can predict `R(e + 1)` before epoch `e`
//! ends, and anyone with the log and the tracker's public key can check it.
//! Ed25519 signing is deterministic, so the tracker cannot re-roll it for a
//! fixed head; it can still choose which inputs to accept before signing (a
//! trusted-tracker assumption, like the rest of this design). `R(0)` is derived
//! from the genesis head and is public; no deal is challenged in epoch 0 or 1.
//!
//! ## Atomicity, replays and staleness
//!
//! [`Ledger::apply`] validates and computes every change against an overlay of
//! the touched records, and commits only if the whole input succeeded: a
//! refused input changes nothing (not even the head). Every input is refused
//! when applied a second time — mints and account messages by nonce, deals by
//! proposal id, pre-commits, seal and window proofs by the deal's state,
//! `EndEpoch` because its epoch is settled — so applying the same message or
//! epoch twice changes nothing. Unsigned, forged and wrongly signed messages
//! are [`LedgerError::BadSignature`] / [`LedgerError::WrongSigner`]. Proofs
//! are untrusted input: decoding and verification failures are
//! [`LedgerError::InvalidProof`], never panics.
//!
//! ## Invariants
//!
//! [`Ledger::check_invariants`] checks that supply is conserved (the sum of
//! free and locked balances, burned and withdrawn equals minted), that locks
//! equal the sums over live deals (and live files' repair funds), that
//! provider usage equals live deal sizes, that a live deal's escrow plus
//! what it paid is price × (duration + renewals), that a finished deal
//! locks nothing, and that no piece index of a file ever has two live deals. No balance can go negative (`u128`, every
//! subtraction checked). A deal is paid at most once per epoch: settlement
//! runs once per epoch and [`Deal::last_paid_epoch`] only increases.
//!
//! ## Log
//!
//! Each accepted input becomes a [`LogEntry`] `{ index, prev_head, input,
//! events_hash }`; `head = derive_key("crowdstore tracker log v1", prev_head ‖
//! cbor(entry))`, starting from [`genesis_head`]`(config)`. [`replay`]
//! re-applies a log from genesis, checks every index, link and events hash and
//! the invariants; [`Ledger::verify_against`] then compares the result with a
//! stored ledger, naming the first account or deal that differs. This is what
//! `crowd-tracker ledger verify [--home DIR]` runs.
//!
//! ## Cost
//!
//! A window proof costs `O(N · log n)` hashes plus an envelope check; a seal
//! proof `O(C · (L·(d+e) + (d+e)·log n))`. `EndEpoch` visits every live deal
//! (finished deals are kept for history and duplicate detection but skipped
//! by the filter, still costing one comparison each).
//!
//! ## Service
//!
//! [`service`] runs the ledger as a daemon on the crowd-protocol swarm
//! (`crowd-tracker init | run | ledger verify`, home `~/.crowd-tracker`:
//! `identity.key`, `config.toml`, `db/`, and `tracker.json` while running).
//!
//! * **One owner.** The [`Ledger`] and its store live on one thread
//!   ([`service::Owner`]) fed by a bounded channel with oneshot replies.
//!   The swarm task only forwards requests; the epoch loop only talks to
//!   providers. Neither waits on the ledger's work, nor the ledger on them.
//! * **Storage** ([`service::store`]): RocksDB behind a small trait (with an
//!   in-memory twin for tests). Keys: the genesis config (fixed by `init`),
//!   the log entries, the snapshot of the last settled epoch, and side tables
//!   the ledger does not hold — provider addresses, root CID → manifest
//!   (bounded per client, clients with a published deal only), and each
//!   deal's per-epoch history (proven / faulted) and counters.
//! * **Crash semantics.** Each accepted input is one synced write batch (its
//!   log entry and the side records it changes); a settled epoch's batch
//!   also holds the new snapshot. A request is answered only after its batch
//!   is durable; a failed write rebuilds the state from the store. A restart
//!   loads the snapshot and replays the log after it, so a SIGKILL loses no
//!   acknowledged input and never settles an epoch twice (the `EndEpoch`
//!   entry and the snapshot land together, and the ledger refuses a settled
//!   epoch). `ledger verify` replays the whole log from genesis, checks the
//!   snapshot against the state at its point, and works while the tracker
//!   runs (a RocksDB secondary view).
//! * **Epoch loop** ([`service::epoch`], wall clock, `epoch_secs`): every
//!   tick it asks the owner what is due and sends providers, concurrently,
//!   bounded and with timeouts, at their registered addresses: the signed
//!   ticket of a published deal (until queued), then `SealStatus` polls whose
//!   signed commitment becomes a `PreCommit`; the signed seed of a seeded
//!   deal (`ProveSeal`); a signed `WindowChallenge` with the epoch's
//!   randomness for each active deal challenged in the open epoch. Returned
//!   proofs are applied in batches with [`Ledger::apply_proofs_logged`]
//!   (verified in parallel, committed in order). At the deadline the owner
//!   signs and applies `EndEpoch`. Loop state is memory only; after a
//!   restart tickets and challenges are simply sent again.
//! * **Requests**: every [`crowd_protocol::TrackerRequest`]. Registrations
//!   must be sent by their signer; the faucet only exists on a ledger whose
//!   genesis has it (`--devnet`), capped per request; a publish is answered
//!   with its deal id once durable (a retry gets the same id); node requests
//!   are refused. Lists are capped at `MAX_LIST` / `MAX_HISTORY`.
//! * **Metrics** (Prometheus text on `GET /metrics`): epoch, log length,
//!   deals by state, proofs verified / invalid / missing, payments, faults,
//!   slashed, requests served / refused.
//!
//! ```
//! use crowd_protocol::libp2p::identity::Keypair;
//! use crowd_tracker::{sign_epoch, AccountId, Event, Input, Ledger, LedgerConfig};
//!
//! let tracker = Keypair::generate_ed25519();
//! let mut ledger = Ledger::new(LedgerConfig::devnet(&tracker.public()))?;
//! let alice = AccountId(Keypair::generate_ed25519().public().to_peer_id());
//! ledger.apply(Input::Mint { account: alice, amount: 1_000, nonce: 0 })?;
//! assert_eq!(ledger.account(&alice).available, 1_000);
//! // the same mint again is a duplicate and changes nothing
//! assert!(ledger.apply(Input::Mint { account: alice, amount: 1_000, nonce: 0 }).is_err());
//!
//! let events = ledger.apply(sign_epoch(&tracker, ledger.epoch(), &ledger.head())?)?;
//! assert!(matches!(events.last(), Some(Event::EpochEnded { epoch: 0, .. })));
//! assert_eq!(ledger.epoch(), 1);
//! # Ok::<(), crowd_tracker::LedgerError>(())
//! ```

mod error;
mod ledger;
mod log;
#[cfg(feature = "service")]
pub mod service;
mod types;

pub use error::LedgerError;
pub use ledger::{bps_of, seal_seed, ticket, Ledger};
pub use log::{events_hash, genesis_head, replay, LogEntry, Replayer};
pub use types::*;
