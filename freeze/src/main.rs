//! `mysql-snapshot-freeze`: run by the hypervisor agent before it freezes the filesystems.
#![forbid(unsafe_code)]

mod check;
mod clouds;
mod freeze;
mod level;
mod login_session;
mod qemu_ga;
mod run;

fn main() -> std::process::ExitCode {
    freeze::main()
}
