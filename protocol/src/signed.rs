//! Signed envelopes: everything that moves money or state is signed with the
//! sender's libp2p ed25519 identity.
//!
//! A [`Signed<T>`] carries the network it was signed for, the CBOR body of
//! `T`, the signer's public key (libp2p protobuf encoding) and an ed25519
//! signature over `"crowd/2/" ‖ T::DOMAIN ‖ 0x00 ‖ network ‖ body`. The
//! domain keeps a signature made for one message kind from being replayed as
//! another; the network (a [`NetworkId`]: the tracker's genesis head) keeps
//! one made on one network from being replayed on another. Receivers call
//! [`Signed::open`] with their network and the party the message must come
//! from.

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

/// Which network a signature is for: the tracker's genesis head (the hash
/// of its genesis configuration), so a message signed for one network is
/// refused on every other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NetworkId(#[serde(with = "crate::wire::hash32")] pub [u8; 32]);

impl std::fmt::Display for NetworkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for NetworkId {
    type Err = String;
    /// 64 hex digits.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = (0..s.len())
            .step_by(2)
            .map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| format!("network id '{s}' is not hex"))?;
        let id: [u8; 32] = bytes
            .try_into()
            .map_err(|_| format!("network id '{s}' is not 64 hex digits"))?;
        Ok(Self(id))
    }
}

impl NetworkId {
    /// All 64 hex digits.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A CBOR body with the network, the signer's key and signature.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Signed<T> {
    network: NetworkId,
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
            network: self.network,
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
            .field("network", &self.network.to_string())
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
        self.network == other.network
            && self.body == other.body
            && self.signer == other.signer
            && self.signature == other.signature
    }
}

fn signing_input(domain: &str, network: &NetworkId, body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(8 + domain.len() + 1 + 32 + body.len());
    msg.extend_from_slice(b"crowd/2/");
    msg.extend_from_slice(domain.as_bytes());
    msg.push(0);
    msg.extend_from_slice(&network.0);
    msg.extend_from_slice(body);
    msg
}

impl<T: Signable> Signed<T> {
    /// Signs `value` with `key` (an ed25519 keypair) for `network`.
    pub fn sign(key: &Keypair, network: &NetworkId, value: &T) -> Result<Self, ProtocolError> {
        let body = to_cbor(value);
        let signature = key
            .sign(&signing_input(T::DOMAIN, network, &body))
            .map_err(|_| ProtocolError::BadSignature { what: T::DOMAIN })?;
        Ok(Self {
            network: *network,
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

    /// The network it claims to be signed for (checked by [`Signed::open`]).
    pub fn network(&self) -> NetworkId {
        self.network
    }

    /// Checks that it was signed for `network`, the signature, and that the
    /// signer is `expected` (when given), then decodes the body. Untrusted
    /// input: every failure is a typed error.
    pub fn open(&self, network: &NetworkId, expected: Option<&PeerId>) -> Result<(PeerId, T), ProtocolError> {
        let what = T::DOMAIN;
        if self.network != *network {
            return Err(ProtocolError::WrongNetwork {
                what,
                network: self.network.to_string(),
                expected: network.to_string(),
            });
        }
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
        if !key.verify(&signing_input(what, &self.network, &self.body), &self.signature) {
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
        h.update(&self.network.0);
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

    const NET: NetworkId = NetworkId([3; 32]);

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
            let signed = Signed::sign(&key, &NET, &p).unwrap();
            // through the wire as part of a request
            let admission = Signed::sign(&key, &NET, &crate::Admission {
                proposal: signed.id(),
                client: key.public().to_peer_id(),
                escrow: u128::from(n),
                until_epoch: n,
            }).unwrap();
            let wire = crate::wire::to_cbor(&Request::ProposeDeal { proposal: signed.clone(), admission });
            let back: Request = crate::wire::from_cbor("request", &wire).unwrap();
            let Request::ProposeDeal { proposal: back, .. } = back else { panic!() };
            prop_assert_eq!(back.open(&NET, Some(&key.public().to_peer_id())).unwrap().1, p);
        }

        /// Any change to any byte of an envelope is rejected, never a panic.
        #[test]
        fn signed_tamper_proptest(part in 0usize..3, pos in any::<prop::sample::Index>(), xor in 1u8..=255) {
            let key = Keypair::generate_ed25519();
            let mut signed = Signed::sign(&key, &NET, &proposal(&key, 3)).unwrap();
            let (body, signer, sig) = signed.parts_mut();
            let target = [body, signer, sig].into_iter().nth(part).unwrap();
            let i = pos.index(target.len());
            target[i] ^= xor;
            prop_assert!(signed.open(&NET, Some(&key.public().to_peer_id())).is_err());
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
        let signed = Signed::sign(&key, &NET, &c).unwrap();
        // same bytes, reinterpreted as another kind
        let other: Signed<DealProposal> =
            crate::wire::from_cbor("x", &crate::wire::to_cbor(&signed)).unwrap();
        assert!(other.open(&NET, None).is_err());
    }

    #[test]
    fn a_signature_from_another_network_is_refused_and_named() {
        let key = Keypair::generate_ed25519();
        let signed = Signed::sign(&key, &NET, &proposal(&key, 1)).unwrap();
        let other = NetworkId([4; 32]);
        let err = signed.open(&other, None).unwrap_err();
        assert!(matches!(err, ProtocolError::WrongNetwork { .. }), "{err}");
        assert!(err.to_string().contains(&other.to_string()), "{err}");
        // relabelling the envelope's network breaks the signature
        let mut relabelled: Signed<DealProposal> =
            crate::wire::from_cbor("x", &crate::wire::to_cbor(&signed)).unwrap();
        relabelled.network = other;
        assert!(matches!(
            relabelled.open(&other, None),
            Err(ProtocolError::BadSignature { .. })
        ));
        assert_ne!(relabelled.id(), signed.id());
    }

    #[test]
    fn network_ids_parse_from_hex() {
        let id = NetworkId([0xab; 32]);
        assert_eq!(id.to_hex().parse::<NetworkId>().unwrap(), id);
        assert!("abc".parse::<NetworkId>().is_err());
        assert!("zz".repeat(32).parse::<NetworkId>().is_err());
    }

    #[test]
    fn wrong_signer_is_named() {
        let key = Keypair::generate_ed25519();
        let other = Keypair::generate_ed25519().public().to_peer_id();
        let signed = Signed::sign(&key, &NET, &proposal(&key, 1)).unwrap();
        let err = signed.open(&NET, Some(&other)).unwrap_err();
        assert!(matches!(err, ProtocolError::WrongSigner { .. }), "{err}");
    }
}
