//! `mysql-snapshot-freeze --check`: a rehearsal that says whether a real freeze would work, and
//! what to fix if not — connection, lock mode, privileges, writable directories, hypervisor agents
//! and our hooks — then takes and releases the lock once and times it.
//!
//! Each line has a level (`crate::level`): `ok` only when there is nothing for the DBA to act on,
//! `warn` when a freeze would work but the line describes something to act on, `FAIL` when a real
//! freeze would fail. Only a `FAIL` makes `--check` exit non-zero.
//!
//! It holds the lock only for the rehearsal, on its own connection, capped like a real attempt,
//! and never touches the state file or the info file.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::config::SyncFilesystems;
use common::coordinates;
use common::grants;
use common::lock::{Attempt, Choice, LockMode};
use common::preparation;
use common::processlist;
use common::server;
use common::storage;
use common::surroundings::{self, Surroundings};
use common::Config;
use mysql::prelude::Queryable;
use serde_json::{json, Value};

use crate::level::Level;

/// One line of the report.
struct Item {
    name: &'static str,
    level: Level,
    text: String,
}

/// Runs the rehearsal, prints the report (human or JSON) and returns whether a freeze would work.
/// `caller_does_not_freeze` is `--sync-filesystems`.
pub(crate) fn run(config: &Config, as_json: bool, caller_does_not_freeze: bool) -> bool {
    let items = rehearse(config, caller_does_not_freeze);
    let (text, ok) = render(&items, as_json, &config.path);
    common::cli::out(&text);
    ok
}

/// The report as text or JSON, and whether a freeze would work (no line is a `FAIL`; a `warn`
/// does not fail it). JSON keeps each check's `ok` (false only for a `FAIL`) and adds its
/// `level`, and the count of `warnings` beside the overall `ok`.
fn render(items: &[Item], as_json: bool, config_path: &Path) -> (String, bool) {
    let ok = items.iter().all(|i| i.level != Level::Fail);
    let warnings = items.iter().filter(|i| i.level == Level::Warn).count();
    if as_json {
        let checks: Vec<Value> = items
            .iter()
            .map(|i| {
                json!({
                    "check": i.name,
                    "ok": i.level != Level::Fail,
                    "level": i.level.name(),
                    "detail": i.text,
                })
            })
            .collect();
        let doc = json!({"ok": ok, "warnings": warnings, "config": config_path, "checks": checks});
        return (
            serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n",
            ok,
        );
    }
    let mut text = String::new();
    for item in items {
        text.push_str(&format!(
            "{} {:<11} {}\n",
            item.level.mark(),
            item.name,
            item.text
        ));
    }
    text.push_str(match (ok, warnings) {
        (false, _) => "\nA real freeze would FAIL: fix the lines marked FAIL.\n",
        (true, 0) => "\nA real freeze would work.\n",
        (true, _) => {
            "\nA real freeze would work. Read the lines marked warn: each says what to act on.\n"
        }
    });
    (text, ok)
}

/// The `backup-lock` line, on MySQL 8.0 and later when another mode is taken: a recommendation
/// when the backup lock's preconditions hold and statements running now would hold the chosen
/// mode off, or which precondition rules it out. (When it is taken, the `lock mode` line says so.)
fn backup_lock_item(
    config: &Config,
    choice: &Choice,
    refusals: &[String],
    session: &mut server::Session,
) -> Option<Item> {
    if choice.mode == LockMode::BackupLock || LockMode::BackupLock.resolve(&session.info).is_err() {
        return None;
    }
    let name = "backup-lock";
    if !refusals.is_empty() {
        return Some(Item {
            name,
            level: Level::Ok,
            text: format!("not possible here: {}", refusals.join("; ")),
        });
    }
    let mode = choice.mode;
    let threshold = config.long_query_threshold;
    let holding: Vec<processlist::Blocker> =
        processlist::long_statements(&mut session.conn, threshold, &config.ignore_commands)
            .unwrap_or_default()
            .into_iter()
            .filter(|b| b.id != session.info.connection_id)
            .filter(|b| mode.held_up_by(b.kind(), session.info.flavor) != common::lock::HeldUp::No)
            .collect();
    // A recommendation is something to act on; the other answers are for the record.
    Some(Item {
        name,
        level: Level::warn_if(!holding.is_empty()),
        text: match holding.first() {
            Some(longest) => format!(
                "recommended: {} statement(s) running past long-query-threshold ({threshold} s) would hold {} off (longest: {longest}), and every precondition of lock-mode = backup-lock holds; it never waits for them. Its coordinates are a lower bound (docs/consistency.md: seeding a replica)",
                holding.len(),
                mode.name()
            ),
            None => "possible (every precondition holds); not needed now: no long statement would hold the lock off".into(),
        },
    })
}

/// The `lock mode` line: the mode a freeze would take now and why, settled as the locker settles
/// it (the sync setting, the privileges, the surroundings, then the tables), or the refusal.
fn lock_mode_item(choice: &Result<Choice, String>) -> Item {
    match choice {
        Ok(choice) if choice.mode == LockMode::BackupLock => item(
            "lock mode",
            Level::Ok,
            format!(
                "{}; commits flow until the filesystems freeze: the copy is consistent by crash recovery and the info file's coordinates are a lower bound (\"exact\": false; the restored copy holds the exact ones)",
                choice.describe()
            ),
        ),
        Ok(choice) => item("lock mode", Level::Ok, choice.describe()),
        Err(err) => item("lock mode", Level::Fail, err.clone()),
    }
}

/// Every line of the report, in order: the host side, then (when the server answers) the
/// server's, then the lock taken and released once.
fn rehearse(config: &Config, caller_does_not_freeze: bool) -> Vec<Item> {
    let mut items = host_items(config);
    let mut session = match server::connect(&config.client, Duration::from_secs(10)) {
        Ok(session) => session,
        Err(err) => {
            // Logged as well: callers that map outcomes (the AWS document's 206) read the event.
            log::error!("event={} {err}", err.event());
            items.push(item("server", Level::Fail, err.to_string()));
            return items;
        }
    };
    items.push(item(
        "server",
        Level::Ok,
        format!(
            "{} {} at {}",
            session.info.flavor.name(),
            session.info.version,
            config.client.target()
        ),
    ));
    // Read before the preparation, for the replica line and the durability notes.
    let replicas = common::replication::read_replicas(&mut session).unwrap_or_default();
    // The preparation a freeze makes, by the same function the locker calls: every refusal it
    // can make before the lock is a line here.
    let sync = config.sync_filesystems.resolve(caller_does_not_freeze);
    let prepared = match preparation::prepare(
        &mut session,
        config,
        sync,
        surroundings::Tables::Here,
        |_| {},
    ) {
        Ok(prepared) => prepared,
        Err(err) => {
            items.push(item("lock mode", Level::Fail, err.to_string()));
            return items;
        }
    };
    let choice = prepared.choice();
    items.push(lock_mode_item(&choice));
    items.push(privileges_item(&prepared.grants));
    if let Some(note) = system_user_note(config, &mut session) {
        // Not a failure (such statements are waited for), but a GRANT would let freeze kill them.
        items.push(item("kill", Level::Warn, note));
    }
    let replica = !replicas.is_empty();
    if replica {
        items.push(replica_item(config, &mut session.conn, &replicas));
    }
    let around = prepared
        .around
        .map(|mut around| {
            around.durability.replica = replica;
            around
        })
        .map_err(|err| err.to_string());
    items.push(sync_rehearsal(config, caller_does_not_freeze, &around));
    let mut refusals = common::lock::setting_refusals(sync, config.rotate_binlog);
    match &around {
        Ok(around) => refusals.extend(around.backup_lock_refusals()),
        Err(err) => refusals.push(format!("the surroundings could not be read: {err}")),
    }
    if let Some(line) = choice
        .as_ref()
        .ok()
        .and_then(|choice| backup_lock_item(config, choice, &refusals, &mut session))
    {
        items.push(line);
    }
    items.extend(surroundings_items(around));
    if let Ok(choice) = choice {
        items.push(lock_rehearsal(config, choice.mode, &mut session));
    }
    items
}

/// One line of the report.
fn item(name: &'static str, level: Level, text: String) -> Item {
    Item { name, level, text }
}

/// The lines that need no server: the config, the directories, the agents present.
fn host_items(config: &Config) -> Vec<Item> {
    let mut items = vec![item(
        "config",
        Level::Ok,
        if config.path.exists() {
            format!("{}", config.path.display())
        } else {
            format!("{} (absent: built-in defaults)", config.path.display())
        },
    )];
    items.push(writable_dir("run-dir", &config.run_dir, true));
    let info_dir = config.info_file.parent().unwrap_or(Path::new("/"));
    items.push(writable_dir("info-file", info_dir, false));
    if let Some(metrics) = &config.metrics_file {
        // Never a FAIL: the metrics are never in a freeze's way; a warn, as they are lost.
        let dir = metrics.parent().unwrap_or(Path::new("/"));
        let mut line = writable_dir("metrics-file", dir, false);
        if line.level == Level::Fail {
            line.level = Level::Warn;
            line.text = format!(
                "WARNING: {} (freeze and thaw still work; only the metrics are lost)",
                line.text
            );
        }
        items.push(line);
    }
    items.extend(agents());
    items.extend(
        crate::clouds::report(Path::new("/"))
            .into_iter()
            .map(|(name, level, text)| item(name, level, text)),
    );
    items
}

/// The account's privileges for the mode a freeze would take, as the preparation read them; a
/// missing one FAILs unless roles may grant it.
fn privileges_item(grants: &common::Result<grants::GrantReport>) -> Item {
    match grants {
        Ok(report) => match report.error() {
            None => item(
                "privileges",
                Level::Ok,
                format!("{} has every privilege needed", report.account),
            ),
            // Whether a role covers it cannot be told from here: the DBA must look.
            Some(err) if report.has_roles => item(
                "privileges",
                Level::Warn,
                format!("{err} (roles are granted to the account; they may cover it)"),
            ),
            Some(err) => item("privileges", Level::Fail, err.to_string()),
        },
        Err(err) => item("privileges", Level::Fail, err.to_string()),
    }
}

/// The rehearsal: take and release the lock once, capped like a real attempt, and time it.
fn lock_rehearsal(config: &Config, mode: LockMode, session: &mut server::Session) -> Item {
    let setup = common::lock::session_caps(
        config.lock_wait_timeout,
        config.max_lock_time,
        session.info.flavor,
    );
    if let Err(e) = session.conn.query_drop(&setup) {
        return item("rehearsal", Level::Fail, server::describe(&e));
    }
    let started = Instant::now();
    let attempt = mode
        .acquire(&mut session.conn, config.pre_flush, &[], None)
        .map(|(attempt, answers)| {
            session.answers = answers;
            attempt
        });
    let locked_ms = started.elapsed().as_secs_f64() * 1000.0;
    match attempt {
        Ok(Attempt::Acquired) => {
            let coords = coordinates::read(session, mode);
            let released = mode.release(&mut session.conn);
            let held_ms = started.elapsed().as_secs_f64() * 1000.0 - locked_ms;
            match (coords, released) {
                (Ok(c), Ok(())) => item(
                    "rehearsal",
                    Level::Ok,
                    format!(
                        "took the lock in {locked_ms:.1} ms, read the coordinates (binlog {}:{}), released after {held_ms:.1} ms",
                        c.binlog.file.as_deref().unwrap_or("off"),
                        c.binlog.position.map_or("-".into(), |p| p.to_string()),
                    ),
                ),
                (Err(err), _) | (_, Err(err)) => item("rehearsal", Level::Fail, err.to_string()),
            }
        }
        Ok(Attempt::TimedOut { statement, message }) => item(
            "rehearsal",
            Level::Fail,
            format!("`{statement}` timed out after {locked_ms:.0} ms ({message}); a long statement is in the way right now"),
        ),
        Err(err) => item("rehearsal", Level::Fail, err.to_string()),
    }
}

/// On a replica: its SQL threads, the temporary tables they hold open now, and what
/// `replica-safe` will do about them (a FAIL when it could never proceed).
fn replica_item(
    config: &Config,
    conn: &mut mysql::Conn,
    replicas: &[common::replication::Replica],
) -> Item {
    use common::replica_safe::{self, Moment};
    let running = replica_safe::running(replicas);
    let open = match common::durability::replica_open_temp_tables(conn) {
        Ok(open) => open.unwrap_or(0),
        Err(err) => return item("replica", Level::Fail, err.to_string()),
    };
    let threads = format!(
        "{} replication connection(s), SQL thread running on {}",
        replicas.len(),
        if running.is_empty() {
            "none".to_string()
        } else {
            replica_safe::list(&running)
        }
    );
    let (level, what) = match (config.replica_safe, replica_safe::moment(open, &running)) {
        (true, Moment::Stuck { open }) => (Level::Fail, replica_safe::stuck_error(open).to_string()),
        (true, Moment::Wait { open }) => (Level::Ok, format!("{open} temporary table(s) open now: replica-safe = on waits until none is, then stops the SQL thread(s) for the lock")),
        (true, Moment::Clear) => (Level::Ok, "no temporary table open; replica-safe = on stops the SQL thread(s) for the lock and starts them at release".to_string()),
        (false, Moment::Clear) => (Level::Ok, "no temporary table open now (replica-safe = off)".to_string()),
        (false, Moment::Wait { open } | Moment::Stuck { open }) => (Level::Warn, format!("WARNING: {open} temporary table(s) open now: a replica cloned from a snapshot taken now would lack them. Set replica-safe = on, or binlog_format = ROW on the source")),
    };
    item("replica", level, format!("{threads}; {what}"))
}

/// The storage map's flags, each risky durability setting with its fix, and the Galera node's
/// state (a node that is not Synced fails the check: freeze refuses it).
fn surroundings_items(around: std::result::Result<Surroundings, String>) -> Vec<Item> {
    let around = match around {
        Ok(around) => around,
        Err(err) => return vec![item("storage", Level::Fail, err)],
    };
    let mut items = storage_items(&around);
    let risks = around.durability.risks();
    if risks.is_empty() {
        items.push(item(
            "durability",
            Level::Ok,
            "innodb_flush_log_at_trx_commit, sync_binlog, innodb_doublewrite and the tables' engines make a restored copy safe".into(),
        ));
    }
    // Every risk names its fix, and a note says what could not be read: each is a warn (the
    // text keeps telling a hard warning from a note).
    for risk in risks {
        let mark = if risk.hard { "WARNING" } else { "note" };
        items.push(item(
            "durability",
            Level::Warn,
            format!("{mark}: {}", risk.text),
        ));
    }
    for note in &around.durability.notes {
        items.push(item("durability", Level::Warn, format!("note: {note}")));
    }
    items.extend(cluster_items(around));
    items
}

/// Where the server's files are: one line when nothing is flagged, else a warning per flag.
fn storage_items(around: &Surroundings) -> Vec<Item> {
    if !around.storage.flags.is_empty() {
        return around
            .storage
            .flags
            .iter()
            .map(|flag| item("storage", Level::Warn, format!("WARNING: {flag}")))
            .collect();
    }
    let mut mounts: Vec<String> = around
        .storage
        .paths
        .values()
        .map(|p| format!("{} ({})", p.mount_point.display(), p.fstype))
        .collect();
    mounts.sort();
    mounts.dedup();
    vec![item(
        "storage",
        Level::Ok,
        format!(
            "{} server paths, on {}; nothing flagged",
            around.storage.paths.len(),
            mounts.join(", ")
        ),
    )]
}

/// A Group Replication member's or a Galera node's line (a FAIL where freeze would refuse).
fn cluster_items(around: Surroundings) -> Vec<Item> {
    let mut items = Vec::new();
    if let Some(member) = around.group_replication {
        items.push(match member.check_queue() {
            Ok(()) => item(
                "group-repl",
                Level::Ok,
                format!(
                    "{} member ({}) of group {}; {} transactions in its applier queue. Snapshot a secondary: FTWRL blocks the member's applier",
                    member.member_role.as_deref().unwrap_or("a"),
                    member.member_state,
                    member.group_name.as_deref().unwrap_or("?"),
                    member.transactions_in_queue.map_or("?".into(), |q| q.to_string())
                ),
            ),
            Err(err) => item("group-repl", Level::Fail, err.to_string()),
        });
    }
    if let Some(node) = around.galera {
        items.push(match node.check_synced() {
            Ok(()) => item(
                "galera",
                Level::Ok,
                format!(
                    "node {} of cluster {} ({} nodes), Synced; lock-mode auto uses backup-stage on MariaDB, which stalls the other nodes least",
                    node.node_name.as_deref().unwrap_or("?"),
                    node.cluster_uuid,
                    node.cluster_size.map_or("?".into(), |n| n.to_string())
                ),
            ),
            Err(err) => item("galera", Level::Fail, err.to_string()),
        });
    }
    items
}

/// What `sync-filesystems` does for this run; when on, the filesystems a freeze would sync, synced
/// once now (outside any lock) to time them.
fn sync_rehearsal(
    config: &Config,
    caller_does_not_freeze: bool,
    around: &std::result::Result<Surroundings, String>,
) -> Item {
    let setting = config.sync_filesystems;
    if !setting.resolve(caller_does_not_freeze) {
        let text = match setting {
            SyncFilesystems::Off if caller_does_not_freeze => "off (sync-filesystems = off) although the caller does not freeze the filesystems: a disk copy may miss what the server wrote".to_string(),
            SyncFilesystems::Off => "off (sync-filesystems = off)".to_string(),
            _ => "off for hooks whose platform freezes the filesystems (sync-filesystems = auto; the Google, Azure-without-fsfreeze and AWS hooks pass --sync-filesystems; rehearse theirs with --check --sync-filesystems)".to_string(),
        };
        let unsynced = caller_does_not_freeze && setting == SyncFilesystems::Off;
        return item("sync", if unsynced { Level::Fail } else { Level::Ok }, text);
    }
    let found = around.as_ref().map_err(String::clone).and_then(|around| {
        around
            .filesystems_to_sync()
            .and_then(|filesystems| storage::sync_all(&filesystems, config.sync_timeout))
            .map_err(|err| err.to_string())
    });
    match found {
        Ok(synced) => {
            let each: Vec<String> = synced
                .iter()
                .map(|s| {
                    format!(
                        "{} ({} on {}: {}) in {} ms",
                        s.mount_point.display(),
                        s.fstype,
                        s.device,
                        s.roles.join(", "),
                        s.sync_ms
                    )
                })
                .collect();
            item(
                "sync",
                Level::Ok,
                format!(
                    "on (sync-filesystems = {}): a freeze syncs {} filesystem(s); synced now: {}",
                    setting.name(),
                    synced.len(),
                    each.join("; ")
                ),
            )
        }
        Err(text) => item("sync", Level::Fail, text),
    }
}

/// Whether we could create a file in `dir` (or create `dir` itself when `may_create`).
/// On MySQL, `CONNECTION_ADMIN` cannot kill statements of accounts with `SYSTEM_USER` (root's):
/// with `kill-long-queries` on and an account without `SYSTEM_USER`, say so (not a failure: such
/// statements are waited for instead).
fn system_user_note(config: &Config, session: &mut server::Session) -> Option<String> {
    if session.info.flavor != server::Flavor::MySql
        || config.kill_long_queries == common::config::KillLongQueries::Off
    {
        return None;
    }
    let grants: Vec<String> = common::rows::all(&mut session.conn, "SHOW GRANTS").ok()?;
    let has = grants
        .iter()
        .any(|g| g.to_ascii_uppercase().contains("SYSTEM_USER"));
    (!has).then(|| {
        format!(
            "note: kill-long-queries = {} cannot kill statements of accounts that hold SYSTEM_USER (root does); freeze waits for those instead. To let it kill them too: GRANT SYSTEM_USER ON *.* TO {}",
            config.kill_long_queries.name(),
            grants
                .first()
                .and_then(|g| g.split(" TO ").nth(1))
                .map_or("<account>", |a| a.trim())
        )
    })
}

fn writable_dir(name: &'static str, dir: &Path, may_create: bool) -> Item {
    let probe_dir = if dir.exists() || !may_create {
        dir.to_path_buf()
    } else {
        nearest_existing(dir)
    };
    let probe = probe_dir.join(format!(".mysql-snapshot-check-{}", std::process::id()));
    let result = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map(|_| ());
    let _ = std::fs::remove_file(&probe);
    match result {
        Ok(()) if dir.exists() => item(name, Level::Ok, format!("{} is writable", dir.display())),
        Ok(()) => item(
            name,
            Level::Ok,
            format!("{} will be created", dir.display()),
        ),
        Err(e) => item(
            name,
            Level::Fail,
            format!("{} is not writable: {e}", dir.display()),
        ),
    }
}

fn nearest_existing(path: &Path) -> PathBuf {
    path.ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"))
        .to_path_buf()
}

/// Which hypervisor agents are installed here, and whether our hook is installed for each.
fn agents() -> Vec<Item> {
    let present = |paths: &[&str]| {
        paths
            .iter()
            .find(|p| Path::new(p).exists())
            .map(|p| p.to_string())
    };
    let mut items = Vec::new();
    let agents: [(&'static str, &[&str], &[&str]); 3] = [
        (
            "vmware",
            &["/usr/bin/vmtoolsd", "/usr/sbin/vmtoolsd"],
            &[
                "/etc/vmware-tools/backupScripts.d/50-mysql-snapshot",
                "/usr/sbin/pre-freeze-script",
            ],
        ),
        (
            "qemu-ga",
            &["/usr/sbin/qemu-ga", "/usr/bin/qemu-ga"],
            &[
                "/etc/qemu/fsfreeze-hook.d/mysql-snapshot",
                "/etc/qemu-ga/fsfreeze-hook.d/mysql-snapshot",
                "/usr/local/sbin/mysql-snapshot-qemu-hook",
                "/usr/sbin/mysql-snapshot-qemu-hook",
            ],
        ),
        (
            "nutanix",
            &["/usr/local/nutanix/ngt", "/usr/local/nutanix"],
            &["/usr/local/sbin/pre_freeze"],
        ),
    ];
    for (name, agent, hooks) in agents {
        let (level, text) = match (present(agent), present(hooks)) {
            // What matters for qemu-ga is the hook it is configured to run.
            (Some(a), _) if name == "qemu-ga" => {
                let dispatched = present(&hooks[..2]).is_some();
                let (level, runs) =
                    crate::qemu_ga::describe(crate::qemu_ga::effective().as_ref(), dispatched);
                (level, format!("{a} present; {runs}"))
            }
            (Some(a), Some(h)) => (Level::Ok, format!("{a} present; hook {h} installed")),
            (Some(a), None) => (
                Level::Warn,
                format!("{a} present but no hook of ours: run install.sh (see README)"),
            ),
            (None, Some(h)) => (Level::Ok, format!("agent not found; hook {h} installed")),
            (None, None) => (Level::Ok, "agent not found".to_string()),
        };
        items.push(item(name, level, text));
    }
    items
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn report() -> Vec<Item> {
        vec![
            item("config", Level::Ok, "/etc/mysql-snapshot.cnf".into()),
            item(
                "qemu-ga",
                Level::Warn,
                "/usr/sbin/qemu-ga present; qemu-ga runs NO freeze hook".into(),
            ),
        ]
    }

    #[test]
    fn a_warning_is_printed_as_warn_and_does_not_fail_the_check() {
        let (text, ok) = render(&report(), false, Path::new("/x.cnf"));
        assert!(ok, "a warning must not fail --check:\n{text}");
        assert!(text.contains("ok   config      /etc/"), "{text}");
        assert!(
            text.contains("warn qemu-ga     /usr/sbin/qemu-ga present; qemu-ga runs NO"),
            "{text}"
        );
        assert!(text.contains("A real freeze would work. Read the lines marked warn"));
    }

    #[test]
    fn json_keeps_ok_per_check_and_adds_its_level_and_the_count_of_warnings() {
        let (text, ok) = render(&report(), true, Path::new("/x.cnf"));
        assert!(ok);
        let doc: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(doc["ok"], true);
        assert_eq!(doc["warnings"], 1);
        assert_eq!(doc["config"], "/x.cnf");
        let qemu = &doc["checks"][1];
        assert_eq!(qemu["check"], "qemu-ga");
        assert_eq!(qemu["ok"], true);
        assert_eq!(qemu["level"], "warn");
        assert_eq!(doc["checks"][0]["level"], "ok");
    }

    #[test]
    fn a_fail_fails_the_check_in_text_and_json() {
        let mut items = report();
        items.push(item("server", Level::Fail, "cannot connect".into()));
        let (text, ok) = render(&items, false, Path::new("/x.cnf"));
        assert!(!ok);
        assert!(text.contains("FAIL server      cannot connect"), "{text}");
        assert!(text.contains("A real freeze would FAIL"), "{text}");
        let (text, ok) = render(&items, true, Path::new("/x.cnf"));
        assert!(!ok);
        let doc: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(doc["ok"], false);
        assert_eq!(doc["checks"][2]["ok"], false);
        assert_eq!(doc["checks"][2]["level"], "fail");
    }
}
