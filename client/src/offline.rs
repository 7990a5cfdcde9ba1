//! What needs no network: a file's root CID and its DAG as a CAR v1.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{bail, Context};
use crowd_chunker::{
    build_from_reader, build_from_slice, extract_file, write_car, DagParams, DagRoot, Discard,
};

use crate::error::{from_anyhow, Result};
use crate::input;

/// A file's root CID (`-` reads standard input).
pub fn cid(file: &Path, params: &DagParams) -> Result<DagRoot> {
    let run = || -> anyhow::Result<DagRoot> {
        if file == Path::new("-") {
            return Ok(build_from_reader(std::io::stdin().lock(), params, &mut Discard)?);
        }
        match input::open(file)? {
            input::Input::Mapped(map) => Ok(build_from_slice(&map, params, &mut Discard)?),
            input::Input::Empty => Ok(build_from_slice(&[], params, &mut Discard)?),
            input::Input::Stream(f) => Ok(build_from_reader(f, params, &mut Discard)?),
        }
    };
    run().map_err(from_anyhow)
}

/// Writes a file's DAG as a CAR v1 to `output` (atomically).
pub fn car(file: &Path, output: &Path, params: &DagParams) -> Result<DagRoot> {
    input::write_atomically(output, |out| {
        let mut out = BufWriter::with_capacity(1 << 20, out);
        let root = match input::open(file)? {
            input::Input::Mapped(map) => write_car(&map, params, &mut out)?,
            input::Input::Empty => write_car(&[], params, &mut out)?,
            input::Input::Stream(_) => bail!(
                "{}: a CAR needs a regular file (it is read twice)",
                file.display()
            ),
        };
        out.flush().context("writing CAR")?;
        Ok(root)
    })
    .map_err(from_anyhow)
}

/// Verifies every block of a CAR v1 and writes the file it holds (atomically).
pub fn car_extract(car: &Path, output: &Path) -> Result<DagRoot> {
    let run = || -> anyhow::Result<DagRoot> {
        let file = File::open(car).with_context(|| format!("cannot open {}", car.display()))?;
        input::write_atomically(output, |out| {
            let mut out = BufWriter::with_capacity(1 << 20, out);
            let root = extract_file(&file, &mut out).with_context(|| format!("{}", car.display()))?;
            out.flush().context("writing output")?;
            Ok(root)
        })
    };
    run().map_err(from_anyhow)
}
