//! The plan freeze hands its locker: every setting of the run as freeze resolved it (the config
//! file with freeze's `--lock-mode`, `--snapshot-timeout` and `--sync-filesystems` applied, the
//! client's credentials included), written on the orders pipe before any order (see
//! `common::protocol`), so that the locker never reads the config file for its lock and no
//! second resolution can differ from freeze's.
//!
//! Owns the plan's spelling: a `plan N` line, then N lines of option-file text made from
//! [`Config::settings`] and read back by the one option-file reader into the one
//! [`Config::from_entries`]. It never reads a file, never follows an `!include`, never reads
//! unbounded data, and never puts a value of the plan (a password, say) in an error.
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use crate::optfile;
use crate::protocol::PLAN;
use crate::{Config, Error, Result};

/// The group that carries what the plan says beyond the settings (the config file's path).
const PLAN_GROUP: &str = "plan";
/// Most lines a plan may have (it has about thirty).
const MAX_LINES: usize = 200;
/// Longest line read (the option-file reader's own limit, with room for the `\n`).
const MAX_LINE_BYTES: u64 = 4096;
/// The name plan lines go by in errors.
const SOURCE: &str = "freeze's plan";

/// `config` as the plan freeze writes on the orders pipe, `\n`-terminated.
pub fn render(config: &Config) -> String {
    let mut lines = vec![
        format!("[{PLAN_GROUP}]"),
        format!(
            "config-file = {}",
            optfile::quote(&config.path.display().to_string())
        ),
    ];
    let mut group = "";
    for (in_group, key, value) in config.settings() {
        // No password is not an empty one.
        if key == "password" && config.client.password.is_none() {
            continue;
        }
        if in_group != group {
            lines.push(format!("[{in_group}]"));
            group = in_group;
        }
        lines.push(format!("{key} = {}", optfile::quote(&value)));
    }
    let mut plan = format!("{PLAN} {}\n", lines.len());
    for line in lines {
        plan.push_str(&line);
        plan.push('\n');
    }
    plan
}

/// The plan on `from`: its `plan N` line and N lines. A plan that is missing (the pipe ends
/// first), malformed or holds a bad setting is [`Error::Plan`], naming the problem, never a
/// value.
pub fn read(from: &mut impl BufRead) -> Result<Config> {
    let header = read_line(from)?.ok_or_else(|| {
        problem(
            "the orders pipe ended before freeze's plan (freeze gone, or the locker started by hand)",
        )
    })?;
    let count = header
        .strip_prefix(PLAN)
        .and_then(|rest| rest.strip_prefix(' '))
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| (1..=MAX_LINES).contains(n))
        .ok_or_else(|| {
            problem(format!(
                "the orders pipe does not start with `{PLAN} N` (N from 1 to {MAX_LINES}): it is no plan from freeze"
            ))
        })?;
    let mut text = String::new();
    for number in 1..=count {
        let line = read_line(from)?.ok_or_else(|| {
            problem(format!(
                "the plan ended at line {number} of {count}: freeze wrote only part of it"
            ))
        })?;
        if line.trim_start().starts_with('!') {
            return Err(problem(format!(
                "line {number} of the plan is a directive; a plan includes nothing"
            )));
        }
        text.push_str(&line);
        text.push('\n');
    }
    parse(&text)
}

/// The settings in the plan's `text` (without its `plan N` line).
fn parse(text: &str) -> Result<Config> {
    let entries =
        optfile::parse_str(text, Path::new(SOURCE)).map_err(|e| problem(e.to_string()))?;
    let mut path = None;
    for entry in entries.iter().filter(|e| e.group == PLAN_GROUP) {
        match (entry.normalized_key().as_str(), &entry.value) {
            ("config-file", Some(value)) if !value.is_empty() => path = Some(PathBuf::from(value)),
            _ => {
                return Err(problem(format!(
                    "line {} of the plan is no part of a plan (`{}`)",
                    entry.line, entry.key
                )))
            }
        }
    }
    let path = path.ok_or_else(|| problem("the plan names no config file"))?;
    Config::from_entries(&path, &entries)
        .and_then(Config::consistent)
        .map_err(|e| problem(e.to_string()))
}

/// One line of at most [`MAX_LINE_BYTES`] without its `\n`; `None` at the end of the pipe.
fn read_line(from: &mut impl BufRead) -> Result<Option<String>> {
    let mut bytes = Vec::new();
    from.take(MAX_LINE_BYTES)
        .read_until(b'\n', &mut bytes)
        .map_err(|e| problem(format!("cannot read the orders pipe: {e}")))?;
    if bytes.is_empty() {
        return Ok(None);
    }
    if bytes.pop() != Some(b'\n') {
        return Err(problem(
            "a line of the plan is unfinished or longer than any plan's",
        ));
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| problem("the plan is not UTF-8: it is no plan from freeze"))
}

fn problem(problem: impl Into<String>) -> Error {
    Error::Plan {
        problem: problem.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{KillLongQueries, SyncFilesystems};
    use crate::lock::LockMode;
    use std::time::Duration;

    /// A config unlike the defaults in every setting, with values that need quoting.
    fn unusual() -> Config {
        let mut config = Config::defaults(PathBuf::from("/etc/my snapshot #1.cnf"));
        config.client.user = "back up".into();
        config.client.password = Some("p#ss \"w\\rd'\n ".into());
        config.client.host = Some("db.example".into());
        config.client.port = 3307;
        config.client.socket = PathBuf::from("/run/my sql.sock");
        config.snapshot_timeout = Duration::from_secs(7);
        config.long_query_threshold = 3;
        config.ignore_commands = vec!["Sleep".into(), "Binlog Dump".into()];
        config.lock_wait_timeout = 9;
        config.max_lock_time = 11;
        config.error_exit_code = 42;
        config.run_dir = PathBuf::from("/tmp/run");
        config.info_file = PathBuf::from("/tmp/info.json");
        config.log_file = Some(PathBuf::from("/tmp/log"));
        config.syslog_facility = syslog::Facility::LOG_LOCAL3;
        config.syslog_socket = PathBuf::from("/tmp/log.sock");
        config.lock_mode = LockMode::parse("ftwrl").expect("a mode");
        config.pre_flush = false;
        config.kill_long_queries = KillLongQueries::All;
        config.kill_long_queries_timeout = 2;
        config.sync_filesystems = SyncFilesystems::On;
        config.sync_timeout = Duration::from_secs(5);
        config.replica_safe = true;
        config.rotate_binlog = true;
        config.metrics_file = Some(PathBuf::from("/tmp/metrics.prom"));
        config
    }

    fn read_str(text: &str) -> Result<Config> {
        read(&mut text.as_bytes())
    }

    #[test]
    fn every_setting_reads_back_from_the_plan_as_freeze_resolved_it() {
        for config in [unusual(), Config::defaults(PathBuf::from("/etc/x.cnf"))] {
            let back = read_str(&render(&config)).expect("the plan reads back");
            assert_eq!(back.settings(), config.settings());
            assert_eq!(back.path, config.path);
            assert_eq!(back.client.password, config.client.password);
            assert_eq!(back.client.host, config.client.host);
        }
    }

    #[test]
    fn the_orders_after_the_plan_stay_on_the_pipe() {
        let text = format!("{}go\n", render(&unusual()));
        let mut pipe = text.as_bytes();
        read(&mut pipe).expect("the plan reads");
        assert_eq!(pipe, b"go\n");
    }

    #[test]
    fn a_missing_cut_or_garbled_plan_is_refused_without_echoing_it() {
        let whole = render(&unusual());
        let cut = &whole[..whole.len() / 2];
        let secret = "hunter2-secret";
        for text in [
            String::new(),
            "go\n".to_string(),
            format!("{secret}\n"),
            format!("plan 1\n{secret}"),
            cut.to_string(),
            "plan 2\n[plan]\n!include /etc/shadow\n".to_string(),
            format!("plan 2\n[client]\npassword = {secret}\n"),
            "plan 999999999999999999999\n".to_string(),
            "plan 1\n\u{0}\u{ff}\n".to_string(),
        ] {
            let err = read_str(&text).expect_err(&format!("accepted {text:?}"));
            assert!(matches!(err, Error::Plan { .. }), "{err:?}");
            assert!(!err.to_string().contains(secret), "{err}");
        }
    }
}
