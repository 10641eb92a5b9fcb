//! thaw's command line: the release sequence itself is `common::thaw`, which `freeze --run`
//! shares.
use std::path::PathBuf;
use std::process::ExitCode;

use argh::FromArgs;
use common::cli::{self, Failure};
use common::phase::Phase;
use common::thaw::thaw;
use common::{Config, Error, Result};

#[derive(FromArgs)]
/// Releases the database lock after a VM snapshot (phase argument: `thaw`, `freezeFail` or none).
struct Args {
    /// the phase the hypervisor passes (`thaw` or `freezeFail`); extra or empty arguments are ignored
    #[argh(positional)]
    phase: Vec<String>,
    /// config file (default: $MYSQL_SNAPSHOT_CONFIG, else /etc/mysql-snapshot.cnf)
    #[argh(option)]
    config: Option<PathBuf>,
    /// report the current state and the last snapshot's outcome instead of thawing (Nagios
    /// exit codes: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)
    #[argh(switch)]
    status: bool,
    /// with --status: print JSON
    #[argh(switch)]
    json: bool,
    /// with --status: print the Prometheus text of `metrics-file`, with the state's current
    /// numbers (for a cron job or a node_exporter wrapper)
    #[argh(switch)]
    prometheus: bool,
    /// who calls and what it passed, written into the log (free text, one line)
    #[argh(option)]
    caller: Option<String>,
    /// print the version and exit
    #[argh(switch)]
    version: bool,
}

impl cli::Program for Args {
    const NAME: &'static str = "thaw";
    fn wants_version(&self) -> bool {
        self.version
    }
}

pub(crate) fn main() -> ExitCode {
    cli::run(run)
}

/// thaw's (or `--status`'s) run with its arguments: `Ok` when released or nothing was held (or
/// with `--status`'s level), `Err` with the failure's status.
fn run(args: Args) -> Result<ExitCode, Failure> {
    let phase = Phase::from_args(&args.phase, Phase::Thaw, &[Phase::Thaw, Phase::FreezeFail])?;
    if args.status {
        // Monitoring must not fill syslog: no logger, and config errors are UNKNOWN (3).
        return Ok(match Config::load(args.config.as_deref()) {
            Ok(config) => crate::status::run(&config, args.json, args.prometheus),
            Err(err) => {
                cli::out(&format!("MYSQL-SNAPSHOT UNKNOWN - {err}\n"));
                ExitCode::from(3)
            }
        });
    }
    let config = cli::start("thaw", args.config.as_deref(), true)?;
    if let Some(caller) = &args.caller {
        log::info!("event=called by=\"{}\"", cli::one_line(caller));
    }
    let result = thaw(&config, phase);
    let result = match (phase, result) {
        (Phase::FreezeFail, Err(err @ Error::LockLost(_))) => {
            log::warn!("event=freeze-fail {err}");
            Ok(())
        }
        (_, result) => result,
    };
    result
        .map(|()| ExitCode::SUCCESS)
        .map_err(|err| Failure::logged(err, config.error_exit_code))
}
