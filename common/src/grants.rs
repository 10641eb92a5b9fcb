//! The privileges the tool needs, and which of them the connected account lacks, read from
//! `SHOW GRANTS` (one round trip) and named with the `GRANT` statement that fixes each.
//!
//! Privileges that reach the account only through a role cannot be seen this way; then the
//! result says so instead of reporting them missing.

use crate::config::{Config, KillLongQueries};
use crate::lock::{Choice, LockMode};
use crate::server::Session;
use crate::server::{Flavor, ServerInfo};
use crate::{Error, Result};

/// One privilege the tool needs, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needed {
    /// The privilege as `GRANT` spells it on this server.
    pub name: &'static str,
    /// Other names that also grant it (e.g. `SUPER`, the pre-10.5.2 alias).
    pub also: &'static [&'static str],
    pub why: &'static str,
}

/// What `SHOW GRANTS` says about the account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantReport {
    /// The account as the server names it, e.g. `'snapper'@'localhost'`.
    pub account: String,
    pub missing: Vec<Needed>,
    /// The account has roles: privileges granted through them are not visible here.
    pub has_roles: bool,
}

impl GrantReport {
    /// The missing privileges as an error, or `None` when nothing is missing.
    pub fn error(&self) -> Option<Error> {
        let fix = self.fix()?;
        let missing: Vec<String> = self
            .missing
            .iter()
            .map(|n| format!("{} ({})", n.name, n.why))
            .collect();
        Some(Error::MissingPrivilege {
            account: self.account.clone(),
            missing: missing.join(", "),
            fix,
        })
    }

    /// The statement that grants everything missing.
    pub fn fix(&self) -> Option<String> {
        if self.missing.is_empty() {
            return None;
        }
        let names: Vec<&str> = self.missing.iter().map(|n| n.name).collect();
        Some(format!(
            "GRANT {} ON *.* TO {};",
            names.join(", "),
            self.account
        ))
    }
}

/// The privileges needed on `info`'s server to take `mode` (resolved: never `auto`) with
/// `config`'s settings.
pub fn needed(info: &ServerInfo, config: &Config, mode: LockMode) -> Vec<Needed> {
    let lock = match mode {
        LockMode::BackupLock => Needed {
            name: "BACKUP_ADMIN",
            also: &[],
            why: "to take the backup lock (LOCK INSTANCE FOR BACKUP) and read performance_schema.log_status",
        },
        _ => Needed {
            name: "RELOAD",
            also: &[],
            why: "to take the lock (FLUSH TABLES WITH READ LOCK, BACKUP STAGE)",
        },
    };
    let mut list = vec![
        lock,
        Needed {
            name: "PROCESS",
            also: &[],
            why: "to see other sessions' statements when waiting for a quiet moment",
        },
    ];
    list.extend(status_privileges(info));
    list.extend(setting_privileges(info, config, mode));
    list
}

/// The privileges that read the binlog position and the replicas' status on this server.
fn status_privileges(info: &ServerInfo) -> Vec<Needed> {
    let mut list = Vec::new();
    match info.flavor {
        Flavor::MariaDb if info.at_least(10, 5, 2) => {
            list.push(Needed {
                name: "BINLOG MONITOR",
                also: &["REPLICATION CLIENT", "SUPER"],
                why: "to read the binlog position (SHOW BINLOG STATUS)",
            });
            list.push(Needed {
                name: "SLAVE MONITOR",
                also: &["REPLICA MONITOR", "SUPER", "REPLICATION SLAVE ADMIN"],
                why: "to read replica coordinates (SHOW ALL SLAVES STATUS)",
            });
        }
        _ => list.push(Needed {
            name: "REPLICATION CLIENT",
            also: &["SUPER"],
            why: "to read the binlog position and replica coordinates",
        }),
    }
    list
}

/// The privileges that settings add: backup-lock's global SELECT, kill-long-queries' right to
/// kill, replica-safe's right to stop and start SQL threads.
fn setting_privileges(info: &ServerInfo, config: &Config, mode: LockMode) -> Vec<Needed> {
    let mut list = Vec::new();
    if mode == LockMode::BackupLock {
        list.push(Needed {
            name: "SELECT",
            also: &[],
            why: "to see every table's engine (lock-mode = backup-lock refuses non-transactional tables, and information_schema shows an account only the tables it may use) and to read performance_schema.log_status",
        });
    }
    if config.kill_long_queries != KillLongQueries::Off {
        let (name, also): (&'static str, &'static [&'static str]) = match info.flavor {
            Flavor::MariaDb => ("CONNECTION ADMIN", &["SUPER"]),
            Flavor::MySql => ("CONNECTION_ADMIN", &["SUPER"]),
        };
        list.push(Needed {
            name,
            also,
            why: "to kill other accounts' statements (kill-long-queries)",
        });
    }
    if config.replica_safe {
        let (name, also): (&'static str, &'static [&'static str]) = match info.flavor {
            Flavor::MariaDb if info.at_least(10, 5, 2) => ("REPLICATION SLAVE ADMIN", &["SUPER"]),
            Flavor::MariaDb => ("SUPER", &[]),
            Flavor::MySql => ("REPLICATION_SLAVE_ADMIN", &["SUPER"]),
        };
        list.push(Needed {
            name,
            also,
            why: "to stop and start a replica's SQL thread (replica-safe)",
        });
    }
    list
}

/// Reads `SHOW GRANTS` (the session's answers may hold its rows) and reports which privileges `choice`'s
/// mode needs that the account lacks; `auto`'s backup lock settles on its fallback when the
/// account lacks one of the lock's privileges and has all the fallback needs.
pub fn check(
    session: &mut Session,
    config: &Config,
    choice: Choice,
) -> Result<(Choice, GrantReport)> {
    let rows: Vec<String> = session
        .query(SHOW_GRANTS)
        .map_err(|e| Error::server(SHOW_GRANTS, &e))?
        .into_iter()
        .map(|row| mysql::from_row_opt::<String>(row).unwrap_or_default())
        .collect();
    settle(&rows, &session.info, config, choice)
}

/// [`check`] on the text of `SHOW GRANTS` rows.
pub fn settle(
    rows: &[String],
    info: &ServerInfo,
    config: &Config,
    choice: Choice,
) -> Result<(Choice, GrantReport)> {
    let wanted = report(rows, &needed(info, config, choice.mode));
    let Some(fallback) = choice.fallback else {
        return Ok((choice, wanted));
    };
    // Only the privileges of the lock itself decide: one both modes need is missing either way.
    let fallback_needs = needed(info, config, fallback);
    let own: Vec<&str> = wanted
        .missing
        .iter()
        .filter(|n| !fallback_needs.iter().any(|f| f.name == n.name))
        .map(|n| n.name)
        .collect();
    if own.is_empty() {
        return Ok((choice, wanted));
    }
    let instead = report(rows, &fallback_needs);
    let names = own;
    let why = format!(
        "the account lacks {} ({}{})",
        names.join(", "),
        wanted.fix().unwrap_or_default(),
        match wanted.has_roles {
            true => "; roles are not read",
            false => "",
        }
    );
    Ok((choice.settle(vec![why])?, instead))
}

/// The statement that lists the account's privileges.
pub const SHOW_GRANTS: &str = "SHOW GRANTS";

/// The report for the text of `SHOW GRANTS` rows.
pub fn report(rows: &[String], needed: &[Needed]) -> GrantReport {
    let mut held: Vec<String> = Vec::new();
    let mut account = String::new();
    let mut has_roles = false;
    for row in rows {
        let Some(rest) = row.strip_prefix("GRANT ") else {
            continue;
        };
        let Some((privileges, target)) = rest.split_once(" ON ") else {
            // `GRANT role TO user`: privileges arrive through a role.
            has_roles |= rest.contains(" TO ");
            continue;
        };
        if account.is_empty() {
            if let Some((_, to)) = target.split_once(" TO ") {
                account = to.split_whitespace().next().unwrap_or("").replace('`', "'");
            }
        }
        if !target.trim_start().starts_with("*.*") {
            continue; // database- or table-level grants do not carry global privileges
        }
        held.extend(
            privileges
                .split(',')
                .map(|p| p.trim().to_ascii_uppercase())
                .filter(|p| !p.is_empty()),
        );
    }
    let all = held.iter().any(|p| p == "ALL PRIVILEGES" || p == "ALL");
    let missing = needed
        .iter()
        .filter(|n| {
            !all && !held
                .iter()
                .any(|p| p == n.name || n.also.contains(&p.as_str()))
        })
        .cloned()
        .collect();
    GrantReport {
        account: if account.is_empty() {
            "CURRENT_USER".into()
        } else {
            account
        },
        missing,
        has_roles,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maria() -> ServerInfo {
        ServerInfo::new("10.11.6-MariaDB".into(), 1)
    }

    fn names(report: &GrantReport) -> Vec<&str> {
        report.missing.iter().map(|n| n.name).collect()
    }

    #[test]
    fn root_with_all_privileges_lacks_nothing() {
        let config = Config::defaults("/x".into());
        let rows = ["GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` IDENTIFIED VIA unix_socket WITH GRANT OPTION".to_string()];
        assert!(
            report(&rows, &needed(&maria(), &config, LockMode::BackupStage))
                .missing
                .is_empty()
        );
    }

    #[test]
    fn each_missing_privilege_is_named_with_its_fix() {
        let config = Config::defaults("/x".into());
        let rows = ["GRANT RELOAD, BINLOG MONITOR ON *.* TO `snapper`@`localhost` IDENTIFIED BY PASSWORD '*AB'".to_string(),
            "GRANT SELECT ON `snap`.* TO `snapper`@`localhost`".to_string()];
        let r = report(&rows, &needed(&maria(), &config, LockMode::BackupStage));
        assert_eq!(names(&r), ["PROCESS", "SLAVE MONITOR"]);
        assert_eq!(
            r.fix().as_deref(),
            Some("GRANT PROCESS, SLAVE MONITOR ON *.* TO 'snapper'@'localhost';")
        );
        assert!(!r.has_roles);
    }

    #[test]
    fn backup_lock_needs_backup_admin_and_a_global_select_instead_of_reload() {
        let config = Config::defaults("/x".into());
        let mysql = ServerInfo::new("8.4.3".into(), 1);
        let rows =
            ["GRANT RELOAD, PROCESS, REPLICATION CLIENT ON *.* TO `bk`@`localhost`".to_string()];
        let r = report(&rows, &needed(&mysql, &config, LockMode::BackupLock));
        assert_eq!(names(&r), ["BACKUP_ADMIN", "SELECT"]);
        assert_eq!(
            r.fix().as_deref(),
            Some("GRANT BACKUP_ADMIN, SELECT ON *.* TO 'bk'@'localhost';")
        );
        let rows = [
            "GRANT SELECT, PROCESS, REPLICATION CLIENT ON *.* TO `bk`@`localhost`".to_string(),
            "GRANT BACKUP_ADMIN ON *.* TO `bk`@`localhost`".to_string(),
        ];
        assert!(
            report(&rows, &needed(&mysql, &config, LockMode::BackupLock))
                .missing
                .is_empty()
        );
    }

    #[test]
    fn auto_takes_ftwrl_when_the_account_lacks_only_the_backup_locks_privileges() {
        let config = Config::defaults("/x".into());
        let mysql = ServerInfo::new("8.4.3".into(), 1);
        let auto = || LockMode::Auto.resolve(&mysql).expect("resolves");
        // The classic FTWRL account: RELOAD, no BACKUP_ADMIN.
        let ftwrl_account =
            ["GRANT RELOAD, PROCESS, REPLICATION CLIENT ON *.* TO `bk`@`localhost`".to_string()];
        let (choice, r) = settle(&ftwrl_account, &mysql, &config, auto()).expect("resolves");
        assert_eq!(choice.mode, LockMode::Ftwrl);
        assert!(r.missing.is_empty(), "{:?}", names(&r));
        assert!(
            choice.why.contains("the account lacks BACKUP_ADMIN, SELECT (GRANT BACKUP_ADMIN, SELECT ON *.* TO 'bk'@'localhost';"),
            "{}",
            choice.why
        );
        // An account with neither lock's privilege: FTWRL's is named (the mode every server has).
        let neither = ["GRANT PROCESS, REPLICATION CLIENT ON *.* TO `bk`@`localhost`".to_string()];
        let (choice, r) = settle(&neither, &mysql, &config, auto()).expect("resolves");
        assert_eq!(choice.mode, LockMode::Ftwrl);
        assert_eq!(names(&r), ["RELOAD"]);
        // A privilege both modes need decides nothing: the backup lock stays, and it is named.
        let no_process = [
            "GRANT SELECT, REPLICATION CLIENT, BACKUP_ADMIN ON *.* TO `bk`@`localhost`".to_string(),
        ];
        let (choice, r) = settle(&no_process, &mysql, &config, auto()).expect("resolves");
        assert_eq!(choice.mode, LockMode::BackupLock);
        assert_eq!(names(&r), ["PROCESS"]);
        // An explicit backup-lock never falls back: its missing privileges are reported.
        let explicit = LockMode::BackupLock.resolve(&mysql).expect("resolves");
        let (choice, r) = settle(&ftwrl_account, &mysql, &config, explicit).expect("resolves");
        assert_eq!(choice.mode, LockMode::BackupLock);
        assert_eq!(names(&r), ["BACKUP_ADMIN", "SELECT"]);
    }

    #[test]
    fn mysql_dynamic_privileges_and_roles_are_understood() {
        let mut config = Config::defaults("/x".into());
        config.kill_long_queries = KillLongQueries::All;
        let mysql = ServerInfo::new("9.7.4".into(), 1);
        let rows = [
            "GRANT RELOAD, PROCESS, REPLICATION CLIENT ON *.* TO `bk`@`%`".to_string(),
            "GRANT BACKUP_ADMIN,CONNECTION_ADMIN ON *.* TO `bk`@`%`".to_string(),
            "GRANT `dba`@`%` TO `bk`@`%`".to_string(),
        ];
        let r = report(&rows, &needed(&mysql, &config, LockMode::Ftwrl));
        assert!(r.missing.is_empty(), "{:?}", names(&r));
        assert!(r.has_roles);
    }
}
