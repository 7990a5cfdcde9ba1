//! Writes the FastCDC chunk lengths of the vector inputs as JSON, for
//! `tests/vectors/gen.mjs` to build reference DAGs over:
//! `cargo run -p crowd-chunker --example fastcdc_cases > chunker/tests/vectors/fastcdc-cases.json`

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

#[path = "../tests/common/xorshift.rs"]
mod xorshift;

use crowd_chunker::{ChunkParams, ChunkerKind};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seed = 0x2545_F491;
    let cases = [
        ("cdc-small-chunks", 100_000, 1024, 8),
        ("cdc-default", 5 * 1024 * 1024 + 333, 1 << 20, 1024),
    ];
    let mut out = Vec::new();
    for (name, size, chunk, links) in cases {
        let data = xorshift::test_data(size, seed);
        let lengths: Vec<usize> = ChunkParams::new(ChunkerKind::FastCdc, chunk)?
            .ranges(&data)
            .map(|r| r.len())
            .collect();
        out.push(format!(
            "{{\"name\":\"{name}\",\"size\":{size},\"seed\":{seed},\"chunk_size\":{chunk},\"max_links\":{links},\"lengths\":{lengths:?}}}"
        ));
    }
    println!("[\n{}\n]", out.join(",\n"));
    Ok(())
}
