//! No code: see `Cargo.toml`. Depending on this crate gives every binary the
//! dependency features the test build has, so both builds share artifacts.
