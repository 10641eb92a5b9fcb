//! The verify sequence: find the copy, pick the server that wrote it, boot it on a writable layer
//! (crash recovery), check it, say the verdict — on stdout, in one `event=verified` log line and
//! in the metrics file.
//!
//! The copy is never written (the server runs on a layer over it), the server never reaches the
//! network or the machine's own server, and replication never starts on it.
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use argh::FromArgs;
use common::cli::{self, Failure};
use common::metrics::{self, Verified};
use common::{info_file, Config, Error, Result};

use crate::boot::{self, Booted, Plan};
use crate::checks::{self, Findings};
use crate::copy::Copy;
use crate::journal;
use crate::layer::{self, Kind, Layer};
use crate::report::{Report, Verdict};

#[derive(FromArgs)]
/// Proves a copy of the disks restores: boots its datadir on a writable layer (the copy is never
/// written), runs crash recovery, checks its tables and its coordinates against its info file.
/// Exit codes: 0 consistent, 3 crash-consistent only, 4 damaged, 1 not verified, 2 usage.
struct Args {
    /// the root of the mounted copy (a restored disk, an LVM/btrfs snapshot, a loop-mounted
    /// image), or its datadir
    #[argh(positional)]
    path: Option<PathBuf>,
    /// the info file in the copy (default: found at PATH/snapshot-info.json or
    /// PATH/var/lib/mysql-snapshot/snapshot-info.json)
    #[argh(option)]
    info_file: Option<PathBuf>,
    /// the copy's datadir (default: mapped from the info file's storage map, else PATH,
    /// PATH/var/lib/mysql or the one datadir just below PATH)
    #[argh(option)]
    datadir: Option<PathBuf>,
    /// the server binary to boot the copy with (default: the mariadbd or mysqld on PATH of the
    /// copy's release)
    #[argh(option)]
    server: Option<PathBuf>,
    /// boot with a server of another release than the copy's (refused otherwise)
    #[argh(switch)]
    any_version: bool,
    /// the account the server runs as when verify runs as root (default: the owner of the
    /// copy's datadir; mysql when root owns it)
    #[argh(option)]
    user: Option<String>,
    /// an extra server option (e.g. --innodb-page-size=4k), passed last; repeatable
    #[argh(option)]
    server_option: Vec<String>,
    /// CHECK TABLE every table, not only the non-transactional ones
    #[argh(switch)]
    thorough: bool,
    /// how long crash recovery may take before the copy is called damaged, in seconds (default
    /// 600)
    #[argh(option, default = "600")]
    boot_timeout: u64,
    /// where the private work directory is made (default: $TMPDIR or /tmp)
    #[argh(option)]
    work_dir: Option<PathBuf>,
    /// print the report as JSON
    #[argh(switch)]
    json: bool,
    /// config file, for logging and metrics-file (default: $MYSQL_SNAPSHOT_CONFIG, else
    /// /etc/mysql-snapshot.cnf if present)
    #[argh(option)]
    config: Option<PathBuf>,
    /// print the version and exit
    #[argh(switch)]
    version: bool,
}

impl cli::Program for Args {
    const NAME: &'static str = "verify";
    fn wants_version(&self) -> bool {
        self.version
    }
}

pub(crate) fn main() -> ExitCode {
    cli::run(run)
}

/// verify's run with its arguments: `Ok` with the verdict's status, `Err` when no verdict could be
/// reached (1; 2 for a bad argument).
fn run(args: Args) -> Result<ExitCode, Failure> {
    let Some(path) = args.path.clone() else {
        return Err(Error::Usage("give the PATH of a mounted copy or of a datadir".into()).into());
    };
    if args.boot_timeout == 0 {
        return Err(Error::Usage(
            "--boot-timeout must be at least 1 second: crash recovery needs time to run".into(),
        )
        .into());
    }
    let config = cli::start("verify", args.config.as_deref(), false)?;
    let started = Instant::now();
    boot::stop_on_signals()?;
    let result = verify(&args, &path, started);
    // A verdict reached while a signal killed the server is no verdict.
    let result = match boot::stopped_by() {
        Some(signal) => Err(Error::Interrupted { signal }),
        None => result,
    };
    match result {
        Ok((report, verdict)) => {
            log_and_publish(&config, &report, verdict.kind, started);
            match args.json {
                true => {
                    cli::out(&(serde_json::to_string_pretty(&report).unwrap_or_default() + "\n"))
                }
                false => cli::out(&report.text()),
            }
            Ok(ExitCode::from(verdict.exit_code()))
        }
        Err(err) => {
            log::error!(
                "event={} path=\"{}\" {err}",
                err.event(),
                cli::one_line(&path.display().to_string())
            );
            if args.json {
                // A script reading --json gets an answer on every outcome, never empty output.
                let unverified = serde_json::json!({
                    "verdict": "not-verified",
                    "why": [err.to_string()],
                    "path": path,
                });
                cli::out(&(serde_json::to_string_pretty(&unverified).unwrap_or_default() + "\n"));
            }
            // Logged with the copy's path; stderr gets the message too.
            Err(err.into())
        }
    }
}

/// Finds, boots and checks the copy at `path`; the report and its verdict.
fn verify(args: &Args, path: &Path, started: Instant) -> Result<(Report, Verdict)> {
    let copy = Copy::locate(path, args.info_file.as_deref(), args.datadir.as_deref())?;
    if let Some(why) = journal::unreplayed(&copy.datadir) {
        return Err(Error::Unverifiable {
            problem: why,
            fix: "Mount the copy so that its journal is replayed (read-write, on a copy of the image or a snapshot of it: never the only copy), then verify it again".into(),
        });
    }
    let (binary, choice) = boot::choose(
        args.server.as_deref(),
        copy.server_version().as_deref(),
        args.any_version,
    )?;
    let (owner_uid, owner_gid) = copy.owner()?;
    let account = layer::server_account(args.user.as_deref(), owner_uid, owner_gid)?;
    let parent = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let layer = Layer::over(&copy.datadir, &parent, account.as_ref(), owner_uid)?;
    let mut notes: Vec<String> = copy.notes.iter().chain(&layer.notes).cloned().collect();
    if layer.forget_server_uuid()? {
        notes.push("auto.cnf was removed in the writable layer: the booted copy made a server_uuid of its own".into());
    }
    notes.extend(choice);
    match &account {
        None if is_root() => notes.push("the copy's datadir belongs to root and there is no mysql account: the server ran as root".into()),
        Some(account) if account.uid == 0 => notes.push("--user root: the server ran as root".into()),
        _ => {}
    }
    let plan = Plan {
        account: account.as_ref(),
        copy_server_id: copy.server_id(),
        binlog: copy.binlog.as_ref().map(|b| b.basename.as_str()),
        relay_log: copy.relay_log.as_deref(),
        extra: &args.server_option,
        limit: Duration::from_secs(args.boot_timeout),
    };
    let mut findings = Findings::default();
    let booted = Booted::start(&binary, &layer, &plan);
    let boot_ms = match &booted {
        Ok(booted) => booted.took.as_millis(),
        Err(_) => started.elapsed().as_millis(),
    };
    match &booted {
        Ok(booted) => check(booted, &copy, args.thorough, &mut findings)?,
        Err(why) => findings
            .damage
            .push(format!("the copy does not start: {why}")),
    }
    drop(booted);
    let layer_said = match &layer.kind {
        Kind::Overlay => {
            "an overlayfs over the copy's datadir (the copy is its read-only lower layer)"
                .to_string()
        }
        Kind::Copied(why) => format!("a copy of the datadir (cp -a) in a private directory: {why}"),
    };
    drop(layer);
    if findings.damage.is_empty() && !findings.unchecked.is_empty() {
        return Err(unchecked(&findings.unchecked));
    }
    let verdict = Verdict::of(&copy, &findings);
    let recovered_gtid = findings.recovered_gtid.clone();
    let mut report = Report {
        verdict: verdict.kind.name(),
        why: verdict.why.clone(),
        path: path.to_path_buf(),
        datadir: copy.datadir.clone(),
        info_file: copy.info_path.clone(),
        info_says: copy.info.as_ref().map(|i| info_file::verdict(i).1),
        server: format!("{} {}", binary.path.display(), binary.info.version),
        layer: layer_said,
        checked: findings.passed,
        warnings: findings.warnings,
        notes,
        tables_checked: findings.tables_checked,
        boot_ms,
        took_ms: started.elapsed().as_millis(),
        before_first_start: Vec::new(),
        seed_replica_sql: None,
        clone_replica_sql: None,
        grastate: None,
    };
    report.restore_steps(&verdict, copy.held.as_ref(), binary.info.flavor);
    if let (Some(held), Some(binlog)) = (&copy.held, &copy.binlog) {
        report.seed_at_recovered(held, binlog.end.as_ref().ok(), recovered_gtid.as_deref());
    }
    Ok((report, verdict))
}

/// No verdict while tables went unchecked because the booted copy lacks their engine plugin:
/// which, and the options that load them.
fn unchecked(tables: &[(String, String)]) -> Error {
    let names: Vec<&str> = tables.iter().map(|(table, _)| table.as_str()).collect();
    let mut libraries: Vec<&str> = tables.iter().map(|(_, library)| library.as_str()).collect();
    libraries.sort_unstable();
    libraries.dedup();
    let options: Vec<String> = libraries
        .iter()
        .map(|library| format!("--server-option --plugin-load-add={library}"))
        .collect();
    Error::Unverifiable {
        problem: format!(
            "{} could not be checked: the booted copy has not loaded the engine plugins {} (verify starts the copy's server without its my.cnf and without mysql.plugin)",
            names.join(", "),
            libraries.join(", ")
        ),
        fix: format!("Verify again with {}", options.join(" ")),
    }
}

/// Every check on the booted copy.
fn check(booted: &Booted, copy: &Copy, thorough: bool, findings: &mut Findings) -> Result<()> {
    let mut session = booted.connect()?;
    checks::error_log(&booted.error_log(), findings);
    checks::tables(&mut session, thorough, findings);
    if let Some(held) = &copy.held {
        checks::server_uuid(copy, held, findings);
        checks::binlog(copy, held, findings);
        checks::gtid(&mut session, held, findings);
        checks::replicas(&mut session, held, findings);
        checks::galera(copy, held, findings);
    }
    Ok(())
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The `event=verified` line, and the verdict in the metrics file (never a failure of verify).
fn log_and_publish(config: &Config, report: &Report, verdict: Verified, started: Instant) {
    let line = format!(
        "event=verified verdict={} path=\"{}\" took_ms={} why=\"{}\"",
        report.verdict,
        cli::one_line(&report.path.display().to_string()),
        started.elapsed().as_millis(),
        cli::one_line(&report.why.join("; "))
    );
    match verdict == Verified::Consistent {
        true => log::info!("{line}"),
        false => log::warn!("{line}"),
    }
    let Some(file) = &config.metrics_file else {
        return;
    };
    let update = metrics::Update::of_verify(verdict, common::time::now_unix_ms());
    use std::os::unix::fs::DirBuilderExt;
    let written = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.run_dir)
        .and_then(|()| metrics::write(file, &config.run_dir, &update));
    match written {
        Ok(None) => {}
        Ok(Some(warning)) => log::warn!("event=metrics {warning}"),
        Err(e) => log::warn!(
            "event=metrics cannot write {}: {e}. The verdict stands",
            file.display()
        ),
    }
}
