//! The raw rate of the client's encryption (the bound `crowd put`'s private
//! path is compared with in docs/BENCHMARKS.md): encrypts and decrypts
//! SIZE_MIB of random bytes in memory with the same reader and writer
//! `crowd put` and `crowd get` use.
//!
//! ```sh
//! cargo run --release -p crowd-client --example aead_rate -- 1024
//! ```

use std::io::{Read, Write};
use std::time::Instant;

use crowd_client::crypt::{DecryptWriter, EncryptReader, FileKey};

/// An empty vector whose `capacity` bytes have been written once.
fn touched(capacity: usize) -> Vec<u8> {
    let mut v = vec![1u8; capacity];
    v.clear();
    v
}

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(256);
    let len = mib << 20;
    let mut plain = vec![0u8; len];
    rand::Rng::fill(&mut rand::thread_rng(), &mut plain[..]);
    let key = FileKey::generate(&mut rand::thread_rng());
    // the output buffers' pages are touched before the clock starts: the
    // figure is the encryption's, not the kernel zeroing fresh pages
    let mut cipher = touched(len + len / 4096 + 64);
    let mut back = touched(len);
    let t = Instant::now();
    let read = EncryptReader::new(&plain[..], key.clone(), len as u64).read_to_end(&mut cipher);
    let enc = t.elapsed();
    if let Err(e) = read {
        eprintln!("aead_rate: {e}");
        std::process::exit(1);
    }
    let t = Instant::now();
    let mut w = DecryptWriter::new(&mut back, key, len as u64, 0..len as u64);
    let ok = w.write_all(&cipher).and_then(|()| w.finish().map(drop));
    let dec = t.elapsed();
    if let Err(e) = ok {
        eprintln!("aead_rate: {e}");
        std::process::exit(1);
    }
    assert!(back == plain, "decryption changed the bytes");
    let rate = |d: std::time::Duration| len as f64 / d.as_secs_f64() / 1e6;
    println!(
        "{mib} MiB: encrypt {:.0} MB/s ({:.2} s), decrypt {:.0} MB/s ({:.2} s), threads {}",
        rate(enc),
        enc.as_secs_f64(),
        rate(dec),
        dec.as_secs_f64(),
        rayon::current_num_threads()
    );
}
