//! The end-to-end tests, one binary: each module checks one part of the promise against private
//! servers the harness starts (see each module's opening lines). Run one module with
//! `cargo test -p mysql-snapshot-tests --test suite -- MODULE::`.
//!
//! Concurrency: libtest runs any two tests side by side (tests/run.sh: `--test-threads=2`), so
//! the harness keeps the heavy ones alone (`harness::gate`). A test is heavy when it boots a QEMU
//! guest (vm), starts a Galera cluster (galera), runs qemu-ga on MySQL (guest_agent_mysql), or
//! says so with `harness::heavy()` (soak, matrix); it then waits until no other test runs and keeps
//! every other test waiting until it ends. Every other test is light: the harness takes that side
//! when the test first makes a temp dir, a server or a sandbox, and light tests run two at a time
//! as they did in their own binaries. The machine-wide locks (the VM slot, the freeze window of
//! `harness::loopfs`) still serialise VMs and freeze windows across processes.
// A test or a benchmark may stop on a server answer it did not expect: the driver's typed
// reads that the binaries must never use (clippy.toml) are allowed here.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used)]

/// Declares `fn $name(case: harness::Case)` as one test per case listed, `$name::$case`: a
/// scenario written once runs on each server and lock mode that applies (`harness::Case`).
macro_rules! scenario {
    ($name:ident: $($case:ident),+ $(,)?) => {
        mod $name {
            $(
                #[test]
                fn $case() {
                    super::$name(harness::Case::$case());
                }
            )+
        }
    };
}

mod backup_lock;
mod batch;
mod cloud_agents;
mod cloud_aws;
mod core;
mod every_copy;
mod faults;
mod faults_mysql;
mod fuzz_state;
mod galera;
mod guest_agent;
mod guest_agent_mysql;
mod install;
mod local_snapshots;
mod matrix;
mod metrics;
mod monitoring;
mod packages;
mod prerequisites;
mod replica_safe;
mod replication;
mod security;
mod soak;
mod surroundings;
mod sync_filesystems;
mod verify;
mod vm;
mod vmtools;
