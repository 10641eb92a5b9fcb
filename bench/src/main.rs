//! `mysql-snapshot-bench`: the benchmark. Starts private servers through the test
//! harness, runs the RELEASE binaries (built beforehand with `cargo build --release --workspace`;
//! this program builds nothing), measures every figure against the floor, prints a markdown table
//! and writes `target/bench-results/<date>.json` (and `.md`).
//!
//! It never touches the machine's own server, never edits the product, and is not part of
//! `cargo test`. Usage: `mysql-snapshot-bench [--runs N] [--servers a,b] [--only a,b] …` (`--help`).
// A test or a benchmark may stop on a server answer it did not expect: the driver's typed
// reads that the binaries must never use (clippy.toml) are allowed here.
#![allow(clippy::disallowed_methods)]
mod figures;
mod flavour;
mod floor;
mod kernel;
mod load;
mod many_tables;
mod oltp;
mod product;
mod profile;
mod report;
mod stats;
mod vm;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use argh::FromArgs;
use serde_json::json;

use crate::figures::Bench;
use crate::flavour::Flavour;
use crate::report::Report;

const FIGURES: [&str; 14] = [
    "latency",
    "footprint",
    "release",
    "stall",
    "failed",
    "scaling",
    "preflush",
    "profile",
    "profile-load",
    "vm",
    "sync",
    "backup-lock",
    "load",
    "many-tables",
];

#[derive(FromArgs)]
/// Benchmarks mysql-snapshot's release binaries against the floor on private servers.
struct Args {
    /// measured runs per figure and case (default 20)
    #[argh(option, default = "20")]
    runs: usize,
    /// discarded warm-up runs before each case (default 2)
    #[argh(option, default = "2")]
    warmup: usize,
    /// figures to run, comma-separated: latency (1), footprint (5), release (2), stall (3),
    /// failed (4), scaling (6), preflush, profile, profile-load (the profile under sysbench),
    /// vm (stall and release in a TCG guest; once,
    /// not per server), sync (freeze latency with sync-filesystems on), backup-lock (MySQL:
    /// backup-lock beside FTWRL with a long SELECT running), load (freeze and floor under
    /// sysbench oltp_read_write), many-tables (freeze and floor with 20,000 tables open)
    /// (default: all)
    #[argh(option, default = "String::from(\"all\")")]
    only: String,
    /// idle-connection levels of the scaling figure (default 0,100,1000,5000)
    #[argh(option, default = "String::from(\"0,100,1000,5000\")")]
    idle: String,
    /// open tables in the pre-flush experiment's second case (default 400)
    #[argh(option, default = "400")]
    tables: usize,
    /// how many InnoDB tables the many-tables figure makes (default 20000; 200 MyISAM join them)
    #[argh(option, default = "20000")]
    many_tables: usize,
    /// servers to run against, comma-separated, in order (default mariadb-10.11,mysql-9.7;
    /// mariadb-11.8 is also known)
    #[argh(option, default = "String::from(\"mariadb-10.11,mysql-9.7\")")]
    servers: String,
    /// backups per guest in the vm figure (default 10)
    #[argh(option, default = "10")]
    vm_runs: usize,
    /// where results go (default: target/bench-results in the workspace, never committed)
    #[argh(option)]
    results_dir: Option<PathBuf>,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn load_average() -> String {
    read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn meminfo_total() -> String {
    read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or("?".into(), |kib| {
            format!("{:.1} GiB", kib / 1024.0 / 1024.0)
        })
}

fn cpu_model() -> String {
    read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("?".into(), |(_, m)| m.trim().to_string())
}

fn command_output(program: &str, args: &[&str], dir: &Path) -> String {
    std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The `[profile.release]` section of the workspace manifest, one line.
fn release_profile(root: &Path) -> String {
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap_or_default();
    let mut lines = Vec::new();
    let mut inside = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == "[profile.release]";
            continue;
        }
        if inside && !line.is_empty() && !line.starts_with('#') {
            lines.push(line.to_string());
        }
    }
    lines.join(", ")
}

/// The directory of the release binaries: this program's own directory.
fn release_dir() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("find our own executable: {e}"))?;
    let dir = exe
        .parent()
        .ok_or("our executable has no directory")?
        .to_path_buf();
    for name in [
        "mysql-snapshot-freeze",
        "mysql-snapshot-thaw",
        "mysql-snapshot-locker",
        "mysql-snapshot-bench-floor",
    ] {
        if !dir.join(name).is_file() {
            return Err(format!(
                "{} is missing: run `cargo build --release --workspace` first (this benchmark builds nothing)",
                dir.join(name).display()
            ));
        }
    }
    if !dir.ends_with("release") {
        eprintln!(
            "warning: the binaries in {} are not a release build; figures are meaningless for debug builds",
            dir.display()
        );
    }
    Ok(dir)
}

fn run_flavour(
    flavour: Flavour,
    args: &Args,
    wanted: &[String],
    bin_dir: &Path,
    report: &mut Report,
) -> Result<serde_json::Value, String> {
    let want = |name: &str| wanted.iter().any(|w| w == name || w == "all");
    let levels: Vec<usize> = args
        .idle
        .split(',')
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let target = flavour.start(&[])?;
    let version = target.version();
    eprintln!("== {} ({version})", flavour.name());
    let mut bench = Bench {
        bin_dir: bin_dir.to_path_buf(),
        flavour,
        runs: args.runs,
        warmup: args.warmup,
        report,
    };
    let mut loads = Vec::new();
    let mut failed = Vec::new();
    type Figure<'f> = Box<dyn Fn(&mut Bench) -> figures::Outcome + 'f>;
    let t = target.as_ref();
    let steps: Vec<(&str, Figure)> = vec![
        ("latency", Box::new(|b: &mut Bench| figures::latency(b, t))),
        (
            "footprint",
            Box::new(|b: &mut Bench| figures::footprint(b, t)),
        ),
        (
            "release",
            Box::new(|b: &mut Bench| figures::release_latency(b, t)),
        ),
        (
            "stall",
            Box::new(|b: &mut Bench| figures::stall_under_load(b, t)),
        ),
        (
            "failed",
            Box::new(|b: &mut Bench| figures::failed_attempt(b, t)),
        ),
        (
            "preflush",
            Box::new(|b: &mut Bench| figures::pre_flush(b, t, args.tables)),
        ),
        (
            "profile",
            Box::new(|b: &mut Bench| profile::profile(b, t, "")),
        ),
        (
            "sync",
            Box::new(|b: &mut Bench| figures::sync_latency(b, t)),
        ),
        (
            "backup-lock",
            Box::new(|b: &mut Bench| figures::backup_lock(b, t)),
        ),
        ("load", Box::new(|b: &mut Bench| oltp::under_load(b, t))),
        (
            "profile-load",
            Box::new(|b: &mut Bench| oltp::profile_under_load(b, t)),
        ),
        (
            "many-tables",
            Box::new(|b: &mut Bench| many_tables::many_tables(b, args.many_tables)),
        ),
        (
            "scaling",
            Box::new(|b: &mut Bench| figures::scaling(b, t, &levels)),
        ),
    ];
    for (name, step) in steps {
        if !want(name) {
            continue;
        }
        let before = load_average();
        let started = Instant::now();
        eprintln!("-- {name} (load {before})");
        if let Err(why) = step(&mut bench) {
            bench
                .report
                .note(format!("{}: figure `{name}` FAILED: {why}", flavour.name()));
            failed.push(name);
        }
        loads.push(json!({
            "figure": name,
            "load_before": before,
            "load_after": load_average(),
            "seconds": started.elapsed().as_secs_f64().round(),
        }));
    }
    if !failed.is_empty() {
        return Err(format!("figures failed: {}", failed.join(", ")));
    }
    Ok(json!({"server": flavour.name(), "version": version, "figures": loads}))
}

fn main() -> ExitCode {
    let args: Args = argh::from_env();
    let wanted: Vec<String> = args.only.split(',').map(|s| s.trim().to_string()).collect();
    if let Some(bad) = wanted
        .iter()
        .find(|w| *w != "all" && !FIGURES.contains(&w.as_str()))
    {
        eprintln!(
            "unknown figure `{bad}`; expected one of {}",
            FIGURES.join(", ")
        );
        return ExitCode::from(2);
    }
    if args.runs < 1 {
        eprintln!("--runs must be at least 1");
        return ExitCode::from(2);
    }
    let bin_dir = match release_dir() {
        Ok(dir) => dir,
        Err(why) => {
            eprintln!("{why}");
            return ExitCode::from(1);
        }
    };
    let source = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = source.parent().unwrap_or(source).to_path_buf();
    let mut report = Report::default();
    if let Err(e) = kernel::become_subreaper() {
        report.note(format!(
            "could not become a child subreaper ({e}): the locker's peak RSS is not measured"
        ));
    }
    match kernel::raise_open_files(20_000) {
        Ok(limit) => eprintln!("open-files limit: {limit}"),
        Err(e) => report.note(format!("could not raise the open-files limit: {e}")),
    }

    let date = command_output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"], &root);
    let stamp = command_output("date", &["-u", "+%Y-%m-%dT%H%M%SZ"], &root);
    let started = Instant::now();
    let commit = command_output("git", &["rev-parse", "--short", "HEAD"], &root);
    let dirty = !command_output("git", &["status", "--porcelain"], &root).is_empty();
    let machine = json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory": meminfo_total(),
        "cpu": cpu_model(),
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "load_at_start": load_average(),
    });
    eprintln!("machine: {machine}");
    for name in ["freeze", "thaw", "locker"] {
        let path = bin_dir.join(format!("mysql-snapshot-{name}"));
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        report.fact(
            &format!("release binary size: mysql-snapshot-{name}"),
            format!("{:.2} MiB ({size} bytes)", size as f64 / 1024.0 / 1024.0),
        );
    }
    report.fact("release profile (Cargo.toml)", release_profile(&root));

    let mut servers = Vec::new();
    let mut ok = true;
    let per_server = wanted.iter().any(|w| w != "vm");
    let server_names = if per_server {
        args.servers.as_str()
    } else {
        ""
    };
    for name in server_names
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        let Some((_, flavour)) = Flavour::ALL.iter().find(|(n, _)| *n == name) else {
            report.note(format!("unknown server `{name}` in --servers"));
            ok = false;
            continue;
        };
        match run_flavour(*flavour, &args, &wanted, &bin_dir, &mut report) {
            Ok(summary) => servers.push(summary),
            Err(why) => {
                report.note(format!("{}: {why}", flavour.name()));
                servers.push(json!({"server": flavour.name(), "failed": why}));
                ok = false;
            }
        }
    }

    if wanted.iter().any(|w| w == "vm" || w == "all") {
        let started = Instant::now();
        eprintln!("== vm (load {})", load_average());
        if let Err(why) = vm::figures(&mut report, args.vm_runs.max(1)) {
            report.note(format!("figure `vm` FAILED: {why}"));
            ok = false;
        }
        report.fact(
            "vm figure: seconds",
            format!("{:.0}", started.elapsed().as_secs_f64()),
        );
    }

    let markdown = report.markdown();
    println!("{markdown}");
    let header = json!({
        "date": date,
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "build": "cargo build --release --workspace",
        "commit": commit,
        "uncommitted_changes": dirty,
        "runs": args.runs,
        "warmup": args.warmup,
        "machine": machine,
        "load_at_end": load_average(),
        "seconds": started.elapsed().as_secs_f64().round(),
        "servers": servers,
    });
    let dir = args
        .results_dir
        .clone()
        .unwrap_or_else(|| root.join("target").join("bench-results"));
    let json_path = dir.join(format!("{stamp}.json"));
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| {
            let text = serde_json::to_string_pretty(&report.to_json(header)).unwrap_or_default();
            std::fs::write(&json_path, text + "\n")
        })
        .and_then(|()| std::fs::write(dir.join(format!("{stamp}.md")), &markdown));
    match written {
        Ok(()) => eprintln!("results: {}", json_path.display()),
        Err(e) => {
            eprintln!("could not write {}: {e}", json_path.display());
            ok = false;
        }
    }
    eprintln!("took {:.0} s", started.elapsed().as_secs_f64());
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
