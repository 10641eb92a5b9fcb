//! The settings of one run, read from a MySQL option file.
//!
//! Owns the config path resolution (`--config`, `MYSQL_SNAPSHOT_CONFIG`, `/etc/mysql-snapshot.cnf`),
//! the built-in defaults, value checking and the permission check on files that hold a password.
//! It never logs or echoes a password, and never accepts a setting it does not know.
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::lock::LockMode;
use crate::optfile::{self, Entry};
use crate::process;
pub use crate::server::Client;
use crate::{Error, Result};

/// The config file read when neither `--config` nor `MYSQL_SNAPSHOT_CONFIG` names one.
pub const DEFAULT_PATH: &str = "/etc/mysql-snapshot.cnf";
/// The environment variable naming the config file.
pub const ENV_VAR: &str = "MYSQL_SNAPSHOT_CONFIG";

/// Groups whose connection settings (`user`, `password`, `socket`, `host`, `port`) are read, in
/// order; a later group overrides an earlier one.
const CLIENT_GROUPS: [&str; 4] = [
    "client",
    "client-server",
    "client-mariadb",
    "mysql-snapshot",
];
const TOOL_GROUP: &str = "mysql-snapshot";

/// Every setting of one run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file the settings came from (it may not exist when it is the default path).
    pub path: PathBuf,
    pub client: Client,
    pub snapshot_timeout: Duration,
    pub long_query_threshold: u64,
    pub ignore_commands: Vec<String>,
    pub lock_wait_timeout: u64,
    pub max_lock_time: u64,
    pub error_exit_code: u8,
    pub run_dir: PathBuf,
    pub info_file: PathBuf,
    pub log_file: Option<PathBuf>,
    pub syslog_facility: syslog::Facility,
    pub syslog_socket: PathBuf,
    pub lock_mode: LockMode,
    /// `FLUSH NO_WRITE_TO_BINLOG TABLES` before FTWRL.
    pub pre_flush: bool,
    pub kill_long_queries: KillLongQueries,
    /// Seconds a lock attempt waits before blocking statements are killed.
    pub kill_long_queries_timeout: u64,
    /// Whether freeze syncs the server's filesystems once the lock is held (see [`SyncFilesystems`]).
    pub sync_filesystems: SyncFilesystems,
    /// How long the syncs may take before the freeze fails and the lock is released.
    pub sync_timeout: Duration,
    /// `replica-safe`: on a replica, stop its SQL threads at a moment with no open temporary
    /// tables before the lock, and start them again at release (see `replica_safe`).
    pub replica_safe: bool,
    /// `rotate-binlog`: `FLUSH BINARY LOGS` under the lock, so that the snapshot's last binary
    /// log ends at the snapshot and the next one (named in the info file) starts the replay.
    pub rotate_binlog: bool,
    /// `metrics-file`: the Prometheus textfile freeze and thaw keep up to date (empty: none).
    pub metrics_file: Option<PathBuf>,
}

/// `sync-filesystems`: whether freeze `syncfs(2)`s every filesystem holding server files after
/// the lock is held and the info file is written, before it reports success. Needed where the
/// platform copies the disk without freezing the filesystems (Google, AWS DLM, Azure with
/// `fsFreezeEnabled: false`); harmless but not needed where the agent freezes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncFilesystems {
    /// On when the hook says its platform does not freeze (`freeze --sync-filesystems`).
    Auto,
    On,
    Off,
}

impl SyncFilesystems {
    pub fn name(self) -> &'static str {
        match self {
            SyncFilesystems::Auto => "auto",
            SyncFilesystems::On => "on",
            SyncFilesystems::Off => "off",
        }
    }

    /// Whether to sync, given whether the caller said it does not freeze the filesystems.
    pub fn resolve(self, caller_does_not_freeze: bool) -> bool {
        match self {
            SyncFilesystems::Auto => caller_does_not_freeze,
            SyncFilesystems::On => true,
            SyncFilesystems::Off => false,
        }
    }
}

/// Which statements that hold up a lock attempt may be killed (`KILL QUERY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillLongQueries {
    Off,
    /// Only reads (SELECT and the like).
    Select,
    /// Every statement that holds up the lock.
    All,
}

impl KillLongQueries {
    pub fn name(self) -> &'static str {
        match self {
            KillLongQueries::Off => "off",
            KillLongQueries::Select => "select",
            KillLongQueries::All => "all",
        }
    }
}

/// One setting as the config file spells it: its group, key and value.
pub type Setting = (&'static str, &'static str, String);

impl Config {
    /// Every setting with its value in option-file syntax, in the groups the file uses: the one
    /// list against which the built-in defaults, the template install.sh writes and
    /// mysql-snapshot.cnf(5) are checked (tests/tests/defaults.rs).
    pub fn settings(&self) -> Vec<Setting> {
        let client = &self.client;
        let mut settings = vec![
            ("client", "user", client.user.clone()),
            (
                "client",
                "password",
                client.password.clone().unwrap_or_default(),
            ),
            ("client", "socket", client.socket.display().to_string()),
            ("client", "host", client.host.clone().unwrap_or_default()),
            ("client", "port", client.port.to_string()),
        ];
        settings.extend(self.tool_settings());
        settings
    }

    /// The `[mysql-snapshot]` part of [`Config::settings`].
    fn tool_settings(&self) -> Vec<Setting> {
        let path = |p: &Option<PathBuf>| {
            p.as_ref()
                .map_or(String::new(), |p| p.display().to_string())
        };
        let on_off = |on: bool| if on { "on" } else { "off" }.to_string();
        let settings = [
            (
                "snapshot-timeout",
                self.snapshot_timeout.as_secs().to_string(),
            ),
            (
                "long-query-threshold",
                self.long_query_threshold.to_string(),
            ),
            ("ignore-commands", self.ignore_commands.join(",")),
            ("lock-mode", self.lock_mode.name().to_string()),
            ("lock-wait-timeout", self.lock_wait_timeout.to_string()),
            ("pre-flush", on_off(self.pre_flush)),
            (
                "kill-long-queries",
                self.kill_long_queries.name().to_string(),
            ),
            (
                "kill-long-queries-timeout",
                self.kill_long_queries_timeout.to_string(),
            ),
            ("max-lock-time", self.max_lock_time.to_string()),
            ("error-exit-code", self.error_exit_code.to_string()),
            ("run-dir", self.run_dir.display().to_string()),
            ("info-file", self.info_file.display().to_string()),
            ("log-file", path(&self.log_file)),
            ("syslog-facility", facility_name(self.syslog_facility)),
            ("syslog-socket", self.syslog_socket.display().to_string()),
            ("sync-filesystems", self.sync_filesystems.name().to_string()),
            ("sync-timeout", self.sync_timeout.as_secs().to_string()),
            ("metrics-file", path(&self.metrics_file)),
            ("replica-safe", on_off(self.replica_safe)),
            ("rotate-binlog", on_off(self.rotate_binlog)),
        ];
        settings
            .into_iter()
            .map(|(key, value)| (TOOL_GROUP, key, value))
            .collect()
    }

    /// The settings with nothing read from a file.
    pub fn defaults(path: PathBuf) -> Config {
        Config {
            path,
            client: Client {
                user: process::effective_user_name(),
                password: None,
                socket: PathBuf::from("/run/mysqld/mysqld.sock"),
                host: None,
                port: 3306,
            },
            snapshot_timeout: Duration::from_secs(600),
            long_query_threshold: 10,
            ignore_commands: [
                "Sleep",
                "Daemon",
                "Binlog Dump",
                "Binlog Dump GTID",
                "Connect",
                "Delayed insert",
            ]
            .map(String::from)
            .to_vec(),
            lock_wait_timeout: 2,
            max_lock_time: 60,
            error_exit_code: 1,
            run_dir: PathBuf::from("/run/mysql-snapshot"),
            info_file: PathBuf::from("/var/lib/mysql-snapshot/snapshot-info.json"),
            log_file: None,
            syslog_facility: syslog::Facility::LOG_DAEMON,
            syslog_socket: PathBuf::from("/dev/log"),
            lock_mode: LockMode::Auto,
            pre_flush: true,
            kill_long_queries: KillLongQueries::Off,
            kill_long_queries_timeout: 1,
            sync_filesystems: SyncFilesystems::Auto,
            sync_timeout: Duration::from_secs(30),
            replica_safe: false,
            rotate_binlog: false,
            metrics_file: None,
        }
    }

    /// Resolves the config path and reads it. `explicit` is `--config`.
    pub fn load(explicit: Option<&Path>) -> Result<Config> {
        let env = std::env::var_os(ENV_VAR).filter(|v| !v.is_empty());
        let (path, required) = match (explicit, env) {
            (Some(p), _) => (p.to_path_buf(), true),
            (None, Some(p)) => (PathBuf::from(p), true),
            (None, None) => (PathBuf::from(DEFAULT_PATH), false),
        };
        // The helpers freeze starts (the info file's marker, the metrics writer, the fsfreeze
        // watchdog) run in `/`: a relative path must name the same file for them.
        let path = std::path::absolute(&path).unwrap_or(path);
        if !required && !path.exists() {
            return Ok(Config::defaults(path));
        }
        Config::read(&path)
    }

    /// Reads `path` (which must exist) over the defaults.
    pub fn read(path: &Path) -> Result<Config> {
        let entries = optfile::read(path).map_err(|e| Error::Config {
            file: e.file,
            line: e.line,
            message: e.message,
        })?;
        let config = Config::from_entries(path, &entries)?;
        let mut checked = vec![path.to_path_buf()];
        for entry in &entries {
            if !checked.contains(&entry.file) {
                checked.push(entry.file.clone());
            }
        }
        for file in &checked {
            let holds_password = entries.iter().any(|e| {
                &e.file == file
                    && CLIENT_GROUPS.contains(&e.group.as_str())
                    && e.normalized_key() == "password"
            });
            check_permissions(file, holds_password)?;
        }
        config.consistent()
    }

    /// The settings `entries` give over the defaults, each value checked, as read from `path`
    /// (the groups other than the client's and ours are not ours to read). The one place
    /// option-file lines become settings: for a config file and for freeze's plan
    /// (`common::plan`) alike; [`Config::consistent`] then checks them together.
    pub(crate) fn from_entries(path: &Path, entries: &[Entry]) -> Result<Config> {
        let mut config = Config::defaults(path.to_path_buf());
        for entry in entries {
            if CLIENT_GROUPS.contains(&entry.group.as_str()) {
                config.apply_client(entry)?;
            }
            if entry.group == TOOL_GROUP {
                config.apply_tool(entry)?;
            }
        }
        Ok(config)
    }

    /// The settings, once each value is fine, checked against each other.
    pub(crate) fn consistent(self) -> Result<Config> {
        let config = self;
        if config.kill_long_queries != KillLongQueries::Off
            && config.kill_long_queries_timeout >= config.lock_wait_timeout
        {
            return Err(Error::Config {
                file: config.path.clone(),
                line: None,
                message: format!(
                    "kill-long-queries-timeout ({} s) must be below lock-wait-timeout ({} s), or the attempt ends before anything is killed",
                    config.kill_long_queries_timeout, config.lock_wait_timeout
                ),
            });
        }
        Ok(config)
    }

    fn apply_client(&mut self, entry: &Entry) -> Result<bool> {
        let value = || required_value(entry);
        match entry.normalized_key().as_str() {
            "user" => self.client.user = value()?.to_string(),
            "password" => self.client.password = Some(value()?.to_string()),
            "socket" => self.client.socket = PathBuf::from(value()?),
            "host" => {
                let host = value()?;
                self.client.host = match host {
                    "" | "localhost" => None,
                    _ => Some(host.to_string()),
                }
            }
            "port" => self.client.port = number(entry, 1, 65_535)? as u16,
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn apply_tool(&mut self, entry: &Entry) -> Result<()> {
        const CLIENT_KEYS: [&str; 5] = ["user", "password", "socket", "host", "port"];
        let key = entry.normalized_key();
        if CLIENT_KEYS.contains(&key.as_str()) {
            return Ok(()); // applied by apply_client
        }
        match key.as_str() {
            "snapshot-timeout" => {
                self.snapshot_timeout = Duration::from_secs(number(entry, 1, 86_400)?)
            }
            "long-query-threshold" => self.long_query_threshold = number(entry, 0, 86_400)?,
            "ignore-commands" => {
                self.ignore_commands = required_value(entry)?
                    .split(',')
                    .map(|c| c.trim().to_string())
                    .filter(|c| !c.is_empty())
                    .collect()
            }
            "lock-wait-timeout" => self.lock_wait_timeout = number(entry, 1, 3600)?,
            "max-lock-time" => self.max_lock_time = number(entry, 1, 86_400)?,
            "error-exit-code" => self.error_exit_code = number(entry, 1, 255)? as u8,
            "run-dir" => self.run_dir = absolute_path(entry)?,
            "info-file" => self.info_file = absolute_path(entry)?,
            "log-file" => {
                required_value(entry)?;
                self.log_file = optional_path(entry)?
            }
            "syslog-facility" => self.syslog_facility = facility(entry)?,
            "syslog-socket" => self.syslog_socket = absolute_path(entry)?,
            "pre-flush" => self.pre_flush = boolean(entry)?,
            "kill-long-queries" => self.kill_long_queries = kill_long_queries(entry)?,
            "kill-long-queries-timeout" => self.kill_long_queries_timeout = number(entry, 0, 3600)?,
            "sync-filesystems" => self.sync_filesystems = sync_filesystems(entry)?,
            "sync-timeout" => self.sync_timeout = Duration::from_secs(number(entry, 1, 3600)?),
            "replica-safe" => self.replica_safe = boolean(entry)?,
            "rotate-binlog" => self.rotate_binlog = boolean(entry)?,
            "metrics-file" => self.metrics_file = optional_path(entry)?,
            "lock-mode" => {
                self.lock_mode = LockMode::parse(required_value(entry)?)
                    .ok_or_else(|| bad_value(entry, LockMode::EXPECTED))?
            }
            _ => {
                return Err(Error::Config {
                    file: entry.file.clone(),
                    line: Some(entry.line),
                    message: format!(
                        "unknown setting `{}` in [{TOOL_GROUP}]; see mysql-snapshot.cnf(5) for the settings this version knows",
                        entry.key
                    ),
                })
            }
        }
        Ok(())
    }
}

/// An absolute path, or none when the value is empty (or absent).
fn optional_path(entry: &Entry) -> Result<Option<PathBuf>> {
    match entry.value.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(_) => absolute_path(entry).map(Some),
    }
}

fn facility(entry: &Entry) -> Result<syslog::Facility> {
    required_value(entry)?.parse().map_err(|()| {
        bad_value(
            entry,
            "expected a syslog facility such as daemon, user or local0",
        )
    })
}

fn kill_long_queries(entry: &Entry) -> Result<KillLongQueries> {
    match required_value(entry)?.trim().to_ascii_lowercase().as_str() {
        "off" | "0" | "no" | "false" => Ok(KillLongQueries::Off),
        "select" => Ok(KillLongQueries::Select),
        "all" => Ok(KillLongQueries::All),
        _ => Err(bad_value(entry, "expected off, select or all")),
    }
}

fn sync_filesystems(entry: &Entry) -> Result<SyncFilesystems> {
    match required_value(entry)?.trim().to_ascii_lowercase().as_str() {
        "auto" => Ok(SyncFilesystems::Auto),
        "on" | "1" | "yes" | "true" => Ok(SyncFilesystems::On),
        "off" | "0" | "no" | "false" => Ok(SyncFilesystems::Off),
        _ => Err(bad_value(entry, "expected auto, on or off")),
    }
}

fn required_value(entry: &Entry) -> Result<&str> {
    entry.value.as_deref().ok_or_else(|| Error::Config {
        file: entry.file.clone(),
        line: Some(entry.line),
        message: format!("`{}` needs a value (`{} = ...`)", entry.key, entry.key),
    })
}

fn bad_value(entry: &Entry, expected: &str) -> Error {
    // Never echo a password value.
    let shown = if entry.normalized_key() == "password" {
        "(hidden)".to_string()
    } else {
        format!("`{}`", entry.value.as_deref().unwrap_or(""))
    };
    Error::Config {
        file: entry.file.clone(),
        line: Some(entry.line),
        message: format!("bad value {shown} for `{}`: {expected}", entry.key),
    }
}

fn number(entry: &Entry, min: u64, max: u64) -> Result<u64> {
    let raw = required_value(entry)?;
    match raw.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(bad_value(
            entry,
            &format!("expected a whole number from {min} to {max}"),
        )),
    }
}

fn boolean(entry: &Entry) -> Result<bool> {
    // A bare key means "on", as in the mysql client's own option files.
    let Some(raw) = entry.value.as_deref() else {
        return Ok(true);
    };
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "on" | "yes" | "true" => Ok(true),
        "0" | "off" | "no" | "false" => Ok(false),
        _ => Err(bad_value(entry, "expected on or off")),
    }
}

fn absolute_path(entry: &Entry) -> Result<PathBuf> {
    let raw = required_value(entry)?;
    let path = PathBuf::from(raw);
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(bad_value(entry, "expected an absolute path"))
    }
}

/// Refuses a config file that others could change, or read when it holds a password.
fn check_permissions(file: &Path, holds_password: bool) -> Result<()> {
    let meta = std::fs::metadata(file).map_err(|e| Error::io("read config", file, e))?;
    let mode = meta.mode();
    let owner = meta.uid();
    let me = process::effective_uid();
    let foreign_owner = owner != 0 && owner != me;
    let fix = format!("chown root: {f} && chmod 600 {f}", f = file.display());
    if mode & 0o022 != 0 {
        return Err(Error::Config {
            file: file.to_path_buf(),
            line: None,
            message: format!(
                "is writable by group or others (mode {:04o}); anyone could change what runs as root. Fix: {fix}",
                mode & 0o7777
            ),
        });
    }
    if holds_password && (mode & 0o044 != 0 || foreign_owner) {
        return Err(Error::ConfigPermissions {
            file: file.to_path_buf(),
            mode,
            owner,
            fix,
        });
    }
    if foreign_owner {
        return Err(Error::Config {
            file: file.to_path_buf(),
            line: None,
            message: format!(
                "is owned by uid {owner}, neither root nor the caller (uid {me}). Fix: {fix}"
            ),
        });
    }
    Ok(())
}

/// The name a syslog facility is set by (`daemon`, `local0`, …).
fn facility_name(facility: syslog::Facility) -> String {
    format!("{facility:?}")
        .trim_start_matches("LOG_")
        .to_ascii_lowercase()
}
