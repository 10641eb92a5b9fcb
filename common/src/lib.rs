//! The shared library of mysql-snapshot.
//!
//! `freeze`, `thaw` and `locker` are thin binaries over this crate. It owns everything they have in
//! common: the option-file reader and the settings built from it, the state file they coordinate
//! through, the server session and the lock strategies, the coordinates written into the snapshot,
//! logging, and the one error type with its exit codes.
#![deny(unsafe_code)]

pub mod batch;
pub mod cli;
pub mod config;
pub mod coordinates;
pub mod durability;
pub mod error;
pub mod fsfreeze;
pub mod galera;
pub mod grants;
pub mod group_replication;
pub mod info_file;
pub mod lifecycle;
pub mod lock;
pub mod logging;
pub mod metrics;
pub mod optfile;
pub mod phase;
pub mod plan;
pub mod position;
pub mod preparation;
pub mod process;
pub mod processlist;
pub mod protocol;
pub mod quiet;
pub mod replica_safe;
pub mod replication;
pub mod rows;
pub mod server;
pub mod state;
pub mod storage;
pub mod surroundings;
pub mod thaw;
pub mod time;

pub use config::Config;
pub use error::{Error, Result};
