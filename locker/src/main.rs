//! `mysql-snapshot-locker`: holds the lock for one snapshot. Started by freeze, stopped by thaw.
#![forbid(unsafe_code)]

mod inbox;
mod info_writer;
mod locker;

fn main() -> std::process::ExitCode {
    locker::main()
}
