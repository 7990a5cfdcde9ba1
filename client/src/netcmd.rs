//! Network commands: `put` (put.rs), `get` and `export` (get.rs), `ls`,
//! `status` and `balance` (info.rs).

pub use crate::get::{export, get, ExportArgs, GetArgs};
pub use crate::info::{balance, ls, status, BalanceArgs, LsArgs, StatusArgs};
pub use crate::put::{put, PutArgs};
