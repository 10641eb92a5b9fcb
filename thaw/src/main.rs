//! `mysql-snapshot-thaw`: run by the hypervisor agent after the snapshot (`thaw`) or after a
//! failed quiesce (`freezeFail`).
#![forbid(unsafe_code)]

mod status;
mod thaw;

fn main() -> std::process::ExitCode {
    thaw::main()
}
