//! CBOR encoding and length-prefixed frames with size caps.
//!
//! A frame is `u32 big-endian length ‖ CBOR body`. Readers check the length
//! against the cap for what they expect *before* reading the body, so an
//! oversized frame costs the receiver four bytes.

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::ProtocolError;

/// Encodes a value as CBOR. Our wire types always encode.
pub fn to_cbor<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing plain data into a Vec cannot fail.
    let _ = ciborium::into_writer(value, &mut out);
    out
}

/// Decodes untrusted CBOR; `what` names the message in the error.
pub fn from_cbor<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, ProtocolError> {
    ciborium::de::from_reader_with_recursion_limit(bytes, 32).map_err(|e| ProtocolError::Malformed {
        what,
        reason: e.to_string(),
    })
}

/// Appends one frame (`u32` length ‖ CBOR body) to `out`, so several
/// frames can go out in one write.
pub fn append_frame<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), ProtocolError> {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    // Writing plain data into a Vec cannot fail.
    let _ = ciborium::into_writer(value, &mut *out);
    let body = out.len() - at - 4;
    let len = u32::try_from(body).map_err(|_| {
        out.truncate(at);
        ProtocolError::FrameTooLarge {
            len: body as u64,
            max: u32::MAX as u64,
        }
    })?;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Writes one frame, length and body in one write (over yamux each write
/// becomes at least one frame of its own, and each frame a Noise message).
pub async fn write_frame<W, T>(io: &mut W, value: &T) -> Result<(), ProtocolError>
where
    W: AsyncWrite + Unpin,
    T: Serialize + ?Sized,
{
    let mut frame = Vec::new();
    append_frame(&mut frame, value)?;
    io.write_all(&frame).await?;
    io.flush().await?;
    Ok(())
}

/// Reads one frame of at most `max` bytes and decodes it.
pub async fn read_frame<R, T>(io: &mut R, what: &'static str, max: usize) -> Result<T, ProtocolError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let body = read_frame_bytes(io, max).await?;
    from_cbor(what, &body)
}

/// Reads one frame's raw body, refusing lengths above `max`.
pub async fn read_frame_bytes<R: AsyncRead + Unpin>(
    io: &mut R,
    max: usize,
) -> Result<Vec<u8>, ProtocolError> {
    let mut body = Vec::new();
    read_frame_into(io, max, &mut body).await?;
    Ok(body)
}

/// Reads one frame's raw body into `body` (replacing what it held, reusing
/// its memory), refusing lengths above `max`.
pub async fn read_frame_into<R: AsyncRead + Unpin>(
    io: &mut R,
    max: usize,
    body: &mut Vec<u8>,
) -> Result<(), ProtocolError> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(ProtocolError::FrameTooLarge {
            len: len as u64,
            max: max as u64,
        });
    }
    body.resize(len, 0);
    io.read_exact(body).await?;
    Ok(())
}

/// serde helper: `Vec<u8>` as a CBOR byte string (not an array of integers).
pub mod bytes {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// serde helper: `[u8; 32]` as a 32-byte CBOR byte string.
pub mod hash32 {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let v = super::bytes::deserialize(d)?;
        <[u8; 32]>::try_from(v.as_slice()).map_err(|_| serde::de::Error::invalid_length(v.len(), &"32 bytes"))
    }
}

/// serde helper: `Option<[u8; 32]>` as null or a 32-byte CBOR byte string.
pub mod opt_hash32 {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct H(#[serde(with = "super::hash32")] [u8; 32]);

    pub fn serialize<S: Serializer>(v: &Option<[u8; 32]>, s: S) -> Result<S::Ok, S::Error> {
        v.map(H).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[u8; 32]>, D::Error> {
        Ok(Option::<H>::deserialize(d)?.map(|h| h.0))
    }
}

/// serde helper: a `PeerId` as its multihash bytes.
pub mod peer {
    use libp2p::PeerId;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &PeerId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&v.to_bytes())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PeerId, D::Error> {
        let v = super::bytes::deserialize(d)?;
        PeerId::from_bytes(&v).map_err(|e| serde::de::Error::custom(format!("bad peer id: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn oversized_frame_is_refused_from_its_length() {
        let mut io = futures::io::Cursor::new((1u32 << 30).to_be_bytes().to_vec());
        let err = futures::executor::block_on(read_frame_bytes(&mut io, 1024)).unwrap_err();
        assert!(matches!(err, ProtocolError::FrameTooLarge { len, max: 1024 } if len == 1 << 30));
    }

    #[test]
    fn truncated_frame_is_an_io_error() {
        let mut io = futures::io::Cursor::new(vec![0, 0, 0, 10, 1, 2]);
        let err = futures::executor::block_on(read_frame_bytes(&mut io, 1024)).unwrap_err();
        assert!(matches!(err, ProtocolError::Io(_)));
    }

    proptest! {
        /// Frames appended to one buffer are each `length ‖ to_cbor(value)`
        /// and read back one by one, in order, through a reused body.
        #[test]
        fn appended_frames_read_back_in_order_proptest(
            values in proptest::collection::vec((any::<u64>(), proptest::collection::vec(any::<u8>(), 0..300)), 0..8),
        ) {
            let mut out = Vec::new();
            let mut want = Vec::new();
            for v in &values {
                append_frame(&mut out, v).unwrap();
                let body = to_cbor(v);
                want.extend_from_slice(&(body.len() as u32).to_be_bytes());
                want.extend_from_slice(&body);
            }
            prop_assert_eq!(&out, &want);
            let mut io = futures::io::Cursor::new(out);
            let mut body = vec![9u8; 1000];
            for v in &values {
                futures::executor::block_on(read_frame_into(&mut io, 1 << 20, &mut body)).unwrap();
                let back: (u64, Vec<u8>) = from_cbor("t", &body).unwrap();
                prop_assert_eq!(&back, v);
            }
            prop_assert!(futures::executor::block_on(read_frame_into(&mut io, 1 << 20, &mut body)).is_err());
        }

        #[test]
        fn frame_roundtrip_proptest(v in proptest::collection::vec(any::<u64>(), 0..100), s in ".{0,40}") {
            let value = (v, s);
            let mut io = futures::io::Cursor::new(Vec::new());
            futures::executor::block_on(write_frame(&mut io, &value)).unwrap();
            io.set_position(0);
            let back: (Vec<u64>, String) = futures::executor::block_on(read_frame(&mut io, "t", 1 << 20)).unwrap();
            prop_assert_eq!(back, value);
        }
    }
}
