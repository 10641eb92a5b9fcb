//! `mysql-snapshot-verify`: run by a DBA (or a timer) on a copy of the disks, to prove it restores.
#![forbid(unsafe_code)]

mod boot;
mod checks;
mod copy;
mod journal;
mod layer;
mod report;
mod verify;

fn main() -> std::process::ExitCode {
    verify::main()
}
