//! The client side of the bulk protocols: upload a piece, fetch a verified
//! range. Both run on their own libp2p stream, outside the swarm task.

use std::time::Duration;

use futures::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt};
use libp2p::PeerId;

use crate::fetch::receive_range;
use crate::network::{FETCH_PROTOCOL, PIECE_PROTOCOL};
use crate::wire::{read_frame, write_frame};
use crate::{FetchHeader, FetchRequest, PieceId, ProposalId, ProtocolError, UploadHeader, UploadResult};

/// Largest upload result frame (a signed receipt).
const MAX_RESULT: usize = 64 * 1024;

fn open_err(e: libp2p_stream::OpenStreamError) -> ProtocolError {
    ProtocolError::Io(std::io::Error::other(e.to_string()))
}

/// Streams `size` bytes from `data` to `peer` for an accepted proposal and
/// returns the provider's answer. Bytes go from `data`'s own buffer to the
/// stream (no copy in between).
pub async fn upload(
    streams: &mut libp2p_stream::Control,
    peer: PeerId,
    proposal: ProposalId,
    mut data: impl AsyncBufRead + Unpin,
    size: u64,
    stall: Duration,
) -> Result<UploadResult, ProtocolError> {
    let mut stream = streams
        .open_stream(peer, PIECE_PROTOCOL)
        .await
        .map_err(open_err)?;
    write_frame(&mut stream, &UploadHeader { proposal }).await?;
    let mut left = size;
    while left > 0 {
        let chunk = data.fill_buf().await?;
        if chunk.is_empty() {
            return Err(ProtocolError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("piece source ended {left} bytes early"),
            )));
        }
        let n = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        tokio::time::timeout(stall, stream.write_all(&chunk[..n]))
            .await
            .map_err(|_| ProtocolError::Timeout(stall))??;
        data.consume_unpin(n);
        left -= n as u64;
    }
    stream.flush().await?;
    let result = tokio::time::timeout(stall * 4, read_frame(&mut stream, "upload result", MAX_RESULT))
        .await
        .map_err(|_| ProtocolError::Timeout(stall * 4))??;
    let _ = stream.close().await;
    Ok(result)
}

/// Fetches `range` of `piece` (of `size` bytes, known from the
/// manifest) from `peer`, verifying every byte against the piece id before
/// passing it to `sink`; each step must make progress within `stall`.
/// Returns the bytes received.
pub async fn fetch(
    streams: &mut libp2p_stream::Control,
    peer: PeerId,
    piece: PieceId,
    size: u64,
    range: std::ops::Range<u64>,
    stall: Duration,
    sink: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<u64, ProtocolError> {
    let (start, end) = (range.start, range.end);
    let mut stream = tokio::time::timeout(stall, streams.open_stream(peer, FETCH_PROTOCOL))
        .await
        .map_err(|_| ProtocolError::Timeout(stall))?
        .map_err(open_err)?;
    write_frame(&mut stream, &FetchRequest { piece, start, end }).await?;
    let header = tokio::time::timeout(
        stall,
        read_frame(&mut stream, "fetch header", crate::MAX_STREAM_HEADER),
    )
    .await
    .map_err(|_| ProtocolError::Timeout(stall))??;
    match header {
        FetchHeader::Ok { piece_size } if piece_size == size => {}
        FetchHeader::Ok { piece_size } => {
            return Err(ProtocolError::Remote(format!(
                "provider says the piece has {piece_size} bytes, not {size}"
            )))
        }
        FetchHeader::NotFound => return Err(ProtocolError::Remote(format!("{peer} does not have {piece}"))),
        FetchHeader::Refused { reason } => return Err(ProtocolError::Remote(reason)),
    }
    let n = receive_range(&mut stream, &piece.0, size, start, end, stall, sink).await?;
    let _ = stream.close().await;
    Ok(n)
}
