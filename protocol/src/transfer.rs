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

/// Streams a request is sent on before giving up when each was dropped
/// before its answer began. A peer may drop an inbound stream it had no
/// room for: libp2p-stream hands each protocol's inbound streams to the
/// accepting task through a channel with one slot and drops a stream that
/// does not fit (0.5.0-alpha, `Shared::on_inbound_stream`), which a burst
/// of streams from many clients to a busy node does; the opener sees a
/// stream that dies at once, on a connection that stays up.
pub const STREAM_TRIES: u32 = 4;
/// The pause before the second try, doubled for each next one.
const STREAM_RETRY_PAUSE: Duration = Duration::from_millis(50);

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
    fetch_paced(streams, peer, piece, size, range, stall, || async {}, sink).await
}

/// [`fetch`], awaiting `ready()` before each verified group is read: a
/// receiver that cannot take more yet holds the provider back (see
/// [`crate::fetch::receive_range`]).
#[allow(clippy::too_many_arguments)]
pub async fn fetch_paced<F: std::future::Future<Output = ()>>(
    streams: &mut libp2p_stream::Control,
    peer: PeerId,
    piece: PieceId,
    size: u64,
    range: std::ops::Range<u64>,
    stall: Duration,
    ready: impl FnMut() -> F,
    sink: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<u64, ProtocolError> {
    let (start, end) = (range.start, range.end);
    let request = FetchRequest { piece, start, end };
    let mut pause = STREAM_RETRY_PAUSE;
    let mut tries = 0;
    let (mut stream, header) = loop {
        tries += 1;
        let mut stream = tokio::time::timeout(stall, streams.open_stream(peer, FETCH_PROTOCOL))
            .await
            .map_err(|_| ProtocolError::Timeout(stall))?
            .map_err(open_err)?;
        let asked = async {
            write_frame(&mut stream, &request).await?;
            read_frame::<_, FetchHeader>(&mut stream, "fetch header", crate::MAX_STREAM_HEADER).await
        };
        match tokio::time::timeout(stall, asked).await {
            Err(_) => return Err(ProtocolError::Timeout(stall)),
            Ok(Ok(header)) => break (stream, header),
            // dropped before it was answered: nothing was received, ask again
            Ok(Err(ProtocolError::Io(e))) if tries < STREAM_TRIES => {
                tracing::debug!(%peer, tries, "fetch stream dropped before its answer ({e}): opening another");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            Ok(Err(e)) => return Err(e),
        }
    };
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
    let n = receive_range(&mut stream, &piece.0, size, start, end, stall, ready, sink).await?;
    let _ = stream.close().await;
    Ok(n)
}
