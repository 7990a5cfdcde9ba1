//! Signed envelopes: everything that moves money or state is signed with the
//! sender's libp2p ed25519 identity.
//!
//! A [`Signed<T>`] carries the CBOR body of `T`, the signer's public key
//! (libp2p protobuf encoding) and an ed25519 signature over
//! `"crowd/1/" ‖ T::DOMAIN ‖ 0x00 ‖ body`. The domain keeps a signature made
//! for one message kind from being replayed as another. Receivers call
//! [`Signed::open`] with the party the message must come from.

use std::marker::PhantomData;

use libp2p::identity::{Keypair, PublicKey};
use libp2p::PeerId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::wire::{from_cbor, to_cbor};
use crate::ProtocolError;

/// A message kind that can be signed; `DOMAIN` separates signatures by kind.
pub trait Signable: Serialize + DeserializeOwned {
    const DOMAIN: &'static str;
    /// Largest body accepted for this kind.
    const MAX_BODY: usize = MAX_SIGNED_BODY;
}

/// Largest signed body accepted unless a kind says otherwise.
pub const MAX_SIGNED_BODY: usize = 64 * 1024;

/// A CBOR body with the signer's key and signature.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Signed<T> {
    #[serde(with = "crate::wire::bytes")]
    body: Vec<u8>,
    #[serde(with = "crate::wire::bytes")]
    signer: Vec<u8>,
    #[serde(with = "crate::wire::bytes")]
    signature: Vec<u8>,
    #[serde(skip)]
    _kind: PhantomData<fn() -> T>,
}

impl<T> Clone for Signed<T> {
    fn clone(&self) -> Self {
        Self {
            body: self.body.clone(),
            signer: self.signer.clone(),
            signature: self.signature.clone(),
            _kind: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Signed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signed")
            .field("body_len", &self.body.len())
            .field(
                "signer",
                &PublicKey::try_decode_protobuf(&self.signer)
                    .map(|k| k.to_peer_id())
                    .ok(),
            )
            .finish()
    }
}

impl<T> Eq for Signed<T> {}

impl<T> PartialEq for Signed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.body == other.body && self.signer == other.signer && self.signature == other.signature
    }
}

fn signing_input(domain: &str, body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(8 + domain.len() + 1 + body.len());
    msg.extend_from_slice(b"crowd/1/");
    msg.extend_from_slice(domain.as_bytes());
    msg.push(0);
    msg.extend_from_slice(body);
    msg
}

impl<T: Signable> Signed<T> {
    /// Signs `value` with `key` (an ed25519 keypair).
    pub fn sign(key: &Keypair, value: &T) -> Result<Self, ProtocolError> {
        let body = to_cbor(value);
        let signature = key
            .sign(&signing_input(T::DOMAIN, &body))
            .map_err(|_| ProtocolError::BadSignature { what: T::DOMAIN })?;
        Ok(Self {
            body,
            signer: key.public().encode_protobuf(),
            signature,
            _kind: PhantomData,
        })
    }

    /// The signer's peer id, if its key decodes (the signature is not checked).
    pub fn claimed_signer(&self) -> Option<PeerId> {
        PublicKey::try_decode_protobuf(&self.signer)
            .ok()
            .map(|k| k.to_peer_id())
    }

    /// Checks the signature and that the signer is `expected` (when given),
    /// then decodes the body. Untrusted input: every failure is a typed error.
    pub fn open(&self, expected: Option<&PeerId>) -> Result<(PeerId, T), ProtocolError> {
        let what = T::DOMAIN;
        if self.body.len() > T::MAX_BODY {
            return Err(ProtocolError::FrameTooLarge {
                len: self.body.len() as u64,
                max: T::MAX_BODY as u64,
            });
        }
        let key =
            PublicKey::try_decode_protobuf(&self.signer).map_err(|_| ProtocolError::BadSignature { what })?;
        if key.clone().try_into_ed25519().is_err() {
            return Err(ProtocolError::BadSignature { what });
        }
        if !key.verify(&signing_input(what, &self.body), &self.signature) {
            return Err(ProtocolError::BadSignature { what });
        }
        let signer = key.to_peer_id();
        if let Some(expected) = expected {
            if *expected != signer {
                return Err(ProtocolError::WrongSigner {
                    what,
                    signer: signer.to_string(),
                    expected: expected.to_string(),
                });
            }
        }
        Ok((signer, from_cbor(what, &self.body)?))
    }

    /// A content address of the signed message: BLAKE3 over its kind, body and
    /// signer (not the signature, so it cannot be malleated).
    pub fn id(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new_derive_key("crowdstore protocol v1 signed message id");
        h.update(T::DOMAIN.as_bytes());
        h.update(&(self.body.len() as u64).to_le_bytes());
        h.update(&self.body);
        h.update(&self.signer);
        *h.finalize().as_bytes()
    }

    /// For tests of tampering: the raw parts.
    #[doc(hidden)]
    pub fn parts_mut(&mut self) -> (&mut Vec<u8>, &mut Vec<u8>, &mut Vec<u8>) {
        (&mut self.body, &mut self.signer, &mut self.signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DealProposal, PieceId, Request, Response, WindowChallenge};
    use proptest::prelude::*;

    fn proposal(client: &Keypair, n: u64) -> DealProposal {
        DealProposal {
            piece: PieceId(*blake3::hash(&n.to_le_bytes()).as_bytes()),
            piece_size: n + 1,
            client: client.public().to_peer_id(),
            provider: Keypair::generate_ed25519().public().to_peer_id(),
            price_per_epoch: u128::from(n) << 70,
            start_epoch: n,
            duration_epochs: 10,
            provider_collateral: u128::MAX - u128::from(n),
            expiry_epoch: n + 5,
            nonce: n,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn signed_roundtrip_proptest(n in any::<u64>()) {
            let key = Keypair::generate_ed25519();
            let p = proposal(&key, n);
            let signed = Signed::sign(&key, &p).unwrap();
            // through the wire as part of a request
            let admission = Signed::sign(&key, &crate::Admission {
                proposal: signed.id(),
                client: key.public().to_peer_id(),
                escrow: u128::from(n),
                until_epoch: n,
            }).unwrap();
            let wire = crate::wire::to_cbor(&Request::ProposeDeal { proposal: signed.clone(), admission });
            let back: Request = crate::wire::from_cbor("request", &wire).unwrap();
            let Request::ProposeDeal { proposal: back, .. } = back else { panic!() };
            prop_assert_eq!(back.open(Some(&key.public().to_peer_id())).unwrap().1, p);
        }

        /// Any change to any byte of an envelope is rejected, never a panic.
        #[test]
        fn signed_tamper_proptest(part in 0usize..3, pos in any::<prop::sample::Index>(), xor in 1u8..=255) {
            let key = Keypair::generate_ed25519();
            let mut signed = Signed::sign(&key, &proposal(&key, 3)).unwrap();
            let (body, signer, sig) = signed.parts_mut();
            let target = [body, signer, sig].into_iter().nth(part).unwrap();
            let i = pos.index(target.len());
            target[i] ^= xor;
            prop_assert!(signed.open(Some(&key.public().to_peer_id())).is_err());
        }

        #[test]
        fn garbage_never_decodes_to_a_panic_proptest(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = crate::wire::from_cbor::<Request>("request", &bytes);
            let _ = crate::wire::from_cbor::<Response>("response", &bytes);
        }
    }

    #[test]
    fn a_signature_for_one_kind_is_not_valid_for_another() {
        let key = Keypair::generate_ed25519();
        let c = WindowChallenge {
            deal_id: 1,
            epoch: 2,
            randomness: [0; 32],
        };
        let signed = Signed::sign(&key, &c).unwrap();
        // same bytes, reinterpreted as another kind
        let other: Signed<DealProposal> =
            crate::wire::from_cbor("x", &crate::wire::to_cbor(&signed)).unwrap();
        assert!(other.open(None).is_err());
    }

    #[test]
    fn wrong_signer_is_named() {
        let key = Keypair::generate_ed25519();
        let other = Keypair::generate_ed25519().public().to_peer_id();
        let signed = Signed::sign(&key, &proposal(&key, 1)).unwrap();
        let err = signed.open(Some(&other)).unwrap_err();
        assert!(matches!(err, ProtocolError::WrongSigner { .. }), "{err}");
    }
}
