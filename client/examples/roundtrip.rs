//! Stores a file and gets it back through the `crowd_client` library,
//! against a running network (e.g. `crowd devnet up`):
//!
//! ```sh
//! crowd devnet up
//! cargo run -p crowd-client --example roundtrip -- ~/.crowd 3MiB
//! ```
//!
//! It writes a file of random bytes, puts it (private, the default), gets
//! it back whole and by range, shares it, and checks every byte.

use std::path::PathBuf;
use std::process::ExitCode;

use crowd_client::{Client, GetOptions, PutOptions, Target};

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let home = PathBuf::from(args.next().ok_or("usage: roundtrip HOME [SIZE]")?);
    let size = crowd_client::parse_size(&args.next().unwrap_or_else(|| "3MiB".into()))?;
    let client = Client::open(&home)?;

    let dir = tempfile::tempdir()?;
    let file = dir.path().join("example.bin");
    let data: Vec<u8> = (0..size).map(|_| rand::random::<u8>()).collect();
    std::fs::write(&file, &data)?;

    let put = client.put_path(&file, &PutOptions::default())?;
    println!(
        "put {} ({} bytes, {} deals, public: {})",
        put.root,
        put.size,
        put.deals.len(),
        put.public
    );

    let target: Target = put.root.parse()?;
    let back = dir.path().join("back.bin");
    client.get(&target, &GetOptions::default(), &back)?;
    if std::fs::read(&back)? != data {
        return Err("the file came back different".into());
    }
    let range = (size / 3) as u64..(size / 2) as u64;
    let mut part = Vec::new();
    client.get_to_writer(
        &target,
        &GetOptions {
            range: Some(range.clone()),
        },
        &mut part,
    )?;
    if part != data[range.start as usize..range.end as usize] {
        return Err("the range came back different".into());
    }
    let capability = client.share(&put.root)?;
    println!(
        "got it back whole and bytes {}-{}; capability {}…",
        range.start,
        range.end,
        &capability.to_string()[..24]
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roundtrip: {e}");
            ExitCode::FAILURE
        }
    }
}
