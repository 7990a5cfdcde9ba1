//! dag-pb nodes and the UnixFS `Data` message, encoded with quick-protobuf.
//!
//! Encoding is canonical dag-pb: a node's `Links` (field 2) come before its
//! `Data` (field 1); a link writes `Hash`, `Name` (always present, empty for
//! file chunks) and `Tsize`, in that order. This is what the IPFS reference
//! importers write, so the same content gives byte-identical blocks.

use cid::Cid;
use quick_protobuf::sizeofs::{sizeof_len, sizeof_varint};
use quick_protobuf::{BytesReader, MessageRead, MessageWrite, Writer, WriterBackend};

/// UnixFS `DataType.File`.
pub const UNIXFS_FILE: u64 = 2;
/// UnixFS `DataType.Raw`.
pub const UNIXFS_RAW: u64 = 0;

/// Most links a decoded node may carry (a bound on untrusted input).
pub const MAX_DECODED_LINKS: usize = 1 << 16;

/// One link of a dag-pb node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PbLink {
    pub hash: Cid,
    pub name: String,
    /// Cumulative size of the linked block and everything below it.
    pub tsize: u64,
}

/// A dag-pb node: links, then opaque data (here a UnixFS message).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PbNode {
    pub links: Vec<PbLink>,
    pub data: Option<Vec<u8>>,
}

/// The subset of UnixFS `Data` a file DAG uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnixFsData {
    pub data_type: u64,
    pub data: Option<Vec<u8>>,
    pub filesize: Option<u64>,
    pub blocksizes: Vec<u64>,
}

struct LinkRef<'a>(&'a PbLink, Vec<u8>);

impl MessageWrite for LinkRef<'_> {
    fn get_size(&self) -> usize {
        1 + sizeof_len(self.1.len()) + 1 + sizeof_len(self.0.name.len()) + 1 + sizeof_varint(self.0.tsize)
    }
    fn write_message<W: WriterBackend>(&self, w: &mut Writer<W>) -> quick_protobuf::Result<()> {
        w.write_with_tag(10, |w| w.write_bytes(&self.1))?;
        w.write_with_tag(18, |w| w.write_string(&self.0.name))?;
        w.write_with_tag(24, |w| w.write_uint64(self.0.tsize))
    }
}

impl PbNode {
    /// Canonical dag-pb bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out);
        // Writing into a Vec cannot fail.
        let _ = self.write_into(&mut w);
        out
    }

    fn write_into<W: WriterBackend>(&self, w: &mut Writer<W>) -> quick_protobuf::Result<()> {
        for link in &self.links {
            w.write_with_tag(18, |w| w.write_message(&LinkRef(link, link.hash.to_bytes())))?;
        }
        if let Some(data) = &self.data {
            w.write_with_tag(10, |w| w.write_bytes(data))?;
        }
        Ok(())
    }

    /// Decodes dag-pb bytes; any protobuf error or bad CID is an `Err(reason)`.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut r = BytesReader::from_bytes(bytes);
        Self::from_reader(&mut r, bytes).map_err(|e| e.to_string())
    }
}

impl<'a> MessageRead<'a> for PbNode {
    fn from_reader(r: &mut BytesReader, bytes: &'a [u8]) -> quick_protobuf::Result<Self> {
        let mut node = PbNode::default();
        while !r.is_eof() {
            match r.next_tag(bytes)? {
                10 => node.data = Some(r.read_bytes(bytes)?.to_vec()),
                18 => {
                    if node.links.len() >= MAX_DECODED_LINKS {
                        return Err(quick_protobuf::Error::Message("too many links".into()));
                    }
                    let (mut inner, sub) = nested(r, bytes)?;
                    node.links.push(PbLinkRead::from_reader(&mut inner, sub)?.0)
                }
                t => r.read_unknown(bytes, t)?,
            }
        }
        Ok(node)
    }
}

/// A length-delimited field as a reader over exactly its own bytes.
///
/// quick-protobuf's nested readers (`read_message`, `read_packed`) bound a
/// sub-message only by moving `end`, while its byte reads index the whole
/// buffer: a varint running past a sub-message's end leaves `start > end`,
/// and the next length computation underflows (a panic with overflow
/// checks, found by the `dag_pb` fuzz target). A reader over a sub-slice
/// cannot read past it.
fn nested<'a>(r: &mut BytesReader, bytes: &'a [u8]) -> quick_protobuf::Result<(BytesReader, &'a [u8])> {
    let sub = r.read_bytes(bytes)?;
    Ok((BytesReader::from_bytes(sub), sub))
}

struct PbLinkRead(PbLink);

impl<'a> MessageRead<'a> for PbLinkRead {
    fn from_reader(r: &mut BytesReader, bytes: &'a [u8]) -> quick_protobuf::Result<Self> {
        let mut hash = None;
        let mut name = String::new();
        let mut tsize = 0;
        while !r.is_eof() {
            match r.next_tag(bytes)? {
                10 => {
                    let raw = r.read_bytes(bytes)?;
                    hash = Some(
                        Cid::try_from(raw)
                            .map_err(|e| quick_protobuf::Error::Message(format!("bad link CID: {e}")))?,
                    );
                }
                18 => name = r.read_string(bytes)?.to_string(),
                24 => tsize = r.read_uint64(bytes)?,
                t => r.read_unknown(bytes, t)?,
            }
        }
        let hash = hash.ok_or_else(|| quick_protobuf::Error::Message("link without a hash".into()))?;
        Ok(Self(PbLink { hash, name, tsize }))
    }
}

impl UnixFsData {
    /// A file node over children of these sizes.
    pub fn file(blocksizes: Vec<u64>) -> Self {
        Self {
            data_type: UNIXFS_FILE,
            data: None,
            filesize: Some(blocksizes.iter().sum()),
            blocksizes,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out);
        let _ = self.write_message(&mut w);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut r = BytesReader::from_bytes(bytes);
        Self::from_reader(&mut r, bytes).map_err(|e| e.to_string())
    }

    /// Bytes of file content this node stands for (inline data + children).
    pub fn content_len(&self) -> u64 {
        self.data.as_ref().map_or(0, |d| d.len() as u64) + self.blocksizes.iter().sum::<u64>()
    }
}

impl MessageWrite for UnixFsData {
    fn get_size(&self) -> usize {
        1 + sizeof_varint(self.data_type)
            + self.data.as_ref().map_or(0, |d| 1 + sizeof_len(d.len()))
            + self.filesize.map_or(0, |s| 1 + sizeof_varint(s))
            + self
                .blocksizes
                .iter()
                .map(|s| 1 + sizeof_varint(*s))
                .sum::<usize>()
    }
    fn write_message<W: WriterBackend>(&self, w: &mut Writer<W>) -> quick_protobuf::Result<()> {
        w.write_with_tag(8, |w| w.write_uint64(self.data_type))?;
        if let Some(d) = &self.data {
            w.write_with_tag(18, |w| w.write_bytes(d))?;
        }
        if let Some(s) = self.filesize {
            w.write_with_tag(24, |w| w.write_uint64(s))?;
        }
        for s in &self.blocksizes {
            w.write_with_tag(32, |w| w.write_uint64(*s))?;
        }
        Ok(())
    }
}

impl<'a> MessageRead<'a> for UnixFsData {
    fn from_reader(r: &mut BytesReader, bytes: &'a [u8]) -> quick_protobuf::Result<Self> {
        let mut msg = UnixFsData::default();
        let mut has_type = false;
        while !r.is_eof() {
            match r.next_tag(bytes)? {
                8 => {
                    msg.data_type = r.read_uint64(bytes)?;
                    has_type = true;
                }
                18 => msg.data = Some(r.read_bytes(bytes)?.to_vec()),
                24 => msg.filesize = Some(r.read_uint64(bytes)?),
                32 => {
                    if msg.blocksizes.len() >= MAX_DECODED_LINKS {
                        return Err(quick_protobuf::Error::Message("too many blocksizes".into()));
                    }
                    msg.blocksizes.push(r.read_uint64(bytes)?)
                }
                // packed blocksizes, as some writers emit them
                34 => {
                    let (mut inner, sub) = nested(r, bytes)?;
                    while !inner.is_eof() {
                        if msg.blocksizes.len() >= MAX_DECODED_LINKS {
                            return Err(quick_protobuf::Error::Message("too many blocksizes".into()));
                        }
                        msg.blocksizes.push(inner.read_uint64(sub)?);
                    }
                }
                t => r.read_unknown(bytes, t)?,
            }
        }
        if !has_type {
            return Err(quick_protobuf::Error::Message(
                "UnixFS data without a type".into(),
            ));
        }
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HashAlg;
    use proptest::prelude::*;

    /// Found by the `dag_pb` fuzz target: a link whose varint runs past the
    /// link's end used to underflow inside quick-protobuf (a panic).
    #[test]
    fn a_link_overrunning_its_length_is_an_error_not_a_panic() {
        let crash = "122c0a2401701e207cf378569266ccd4d505708fc83f021e3fa3cbdac4b780a983e8f9c88101122c0a2401701e20181163272493556ffa0096469909b38c73147165c1580100a03a29053d7a179869ea120018c88101122c0a2401701e204393728b864e79fa3a75e2c2582a804e9841c5afd4bf8151a8d433bca17d8166120018c88101122c0a2401701e20bef05f3a5e392a9edb6bef5260e852eafdbae841ed4a1f18f8b5a4dab4f7c755120018c881010a1608021880800420808001208080012080800120808001";
        let bytes: Vec<u8> = (0..crash.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&crash[i..i + 2], 16).unwrap())
            .collect();
        assert!(PbNode::decode(&bytes).is_err());
        // a packed blocksizes field whose last varint overruns it
        let data = [0x08, 0x02, 0x22, 0x01, 0x80, 0x01];
        assert!(UnixFsData::decode(&data).is_err());
    }

    fn any_link() -> impl Strategy<Value = PbLink> {
        (any::<[u8; 8]>(), any::<bool>(), "[a-z]{0,8}", any::<u64>()).prop_map(|(seed, raw, name, tsize)| {
            PbLink {
                hash: HashAlg::Blake3.cid(if raw { crate::RAW } else { crate::DAG_PB }, &seed),
                name,
                tsize,
            }
        })
    }

    proptest! {
        #[test]
        fn pbnode_proptest(links in proptest::collection::vec(any_link(), 0..20),
                           data in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64))) {
            let node = PbNode { links, data };
            prop_assert_eq!(PbNode::decode(&node.encode()).unwrap(), node);
        }

        #[test]
        fn unixfs_data_proptest(sizes in proptest::collection::vec(any::<u64>(), 0..40),
                                inline in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..64))) {
            let mut d = UnixFsData::file(sizes.iter().map(|s| s >> 8).collect());
            d.data = inline;
            prop_assert_eq!(UnixFsData::decode(&d.encode()).unwrap(), d);
        }

        #[test]
        fn pbnode_garbage_never_panics_proptest(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = PbNode::decode(&bytes);
            let _ = UnixFsData::decode(&bytes);
        }
    }
}
