//! What the booted copy is checked for, each check adding to the findings: InnoDB started without
//! forced recovery (the error log), the tables pass `CHECK TABLE`, and — against the held record —
//! the binlog's end, the GTID state, the replica metadata and Galera's grastate.
//!
//! It only reads: no statement here changes data, and nothing is ever repaired (a repair would
//! hide the damage it is there to find).
use std::collections::BTreeMap;

use common::info_file::InfoFile;
use common::replication::{self, Replica};
use common::server::{self, Flavor, Session};

use crate::copy::Copy;

/// What the checks found: damage (the copy does not restore as data), mismatches (it restores,
/// but not at the moment its info file records), what passed, and what a reader should know.
#[derive(Default)]
pub(crate) struct Findings {
    pub(crate) damage: Vec<String>,
    pub(crate) mismatch: Vec<String>,
    pub(crate) passed: Vec<String>,
    pub(crate) warnings: Vec<String>,
    pub(crate) tables_checked: usize,
    /// Tables `CHECK TABLE` could not open because the booted copy has not loaded their engine
    /// (a plugin the copy's own server loads): `(table, plugin library)`. No verdict without them.
    pub(crate) unchecked: Vec<(String, String)>,
    /// The GTID state the copy recovered (MariaDB `gtid_binlog_pos`, MySQL `gtid_executed`).
    pub(crate) recovered_gtid: Option<String>,
}

/// Engines whose tables crash recovery does not make whole: checked by default.
const NON_TRANSACTIONAL: &str = "'MyISAM','Aria','CSV','ARCHIVE','MRG_MyISAM','MRG_MYISAM'";

/// Error-log words that mean the data is damaged, not just that the server crashed.
const DAMAGE_WORDS: [&str; 5] = [
    "Database page corruption",
    "is marked as crashed",
    "innodb_force_recovery",
    "Corrupt",
    "checksum mismatch",
];

/// The error log of the boot: damage it names, its other errors, and whether crash recovery ran.
pub(crate) fn error_log(text: &str, findings: &mut Findings) {
    for line in text.lines() {
        if DAMAGE_WORDS.iter().any(|w| line.contains(w)) {
            findings
                .damage
                .push(format!("the error log says: {}", line.trim()));
        } else if line.contains("[ERROR]") {
            findings
                .warnings
                .push(format!("the error log says: {}", line.trim()));
        }
    }
    if text.contains("crash recovery") || text.contains("not shut down normally") {
        findings
            .passed
            .push("crash recovery ran and InnoDB started without forced recovery".into());
    } else {
        findings
            .passed
            .push("InnoDB started without crash recovery or forced recovery".into());
    }
}

/// `CHECK TABLE` of every non-transactional table (every table with `thorough`).
pub(crate) fn tables(session: &mut Session, thorough: bool, findings: &mut Findings) {
    // ENGINE is NULL for a table the booted server cannot open (its engine not loaded, or a
    // damaged definition): listed too, and CHECK TABLE says which.
    let engines = match thorough {
        true => String::new(),
        false => format!(" AND (ENGINE IN ({NON_TRANSACTIONAL}) OR ENGINE IS NULL)"),
    };
    let listed: Result<Vec<(String, String, Option<String>)>, _> = common::rows::all(
        &mut session.conn,
        &format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME, ENGINE FROM information_schema.TABLES \
             WHERE TABLE_TYPE = 'BASE TABLE' \
             AND TABLE_SCHEMA NOT IN ('information_schema', 'performance_schema', 'sys'){engines} \
             ORDER BY TABLE_SCHEMA, TABLE_NAME"
        ),
    );
    let listed = match listed {
        Ok(listed) => listed,
        Err(e) => {
            findings
                .damage
                .push(format!("the copy cannot list its tables: {e}"));
            return;
        }
    };
    let mut unclosed = 0;
    let damaged_before = findings.damage.len();
    for (schema, table, engine) in &listed {
        let name = format!("{}.{}", identifier(schema), identifier(table));
        let rows: Result<Vec<(String, String, String, String)>, _> =
            common::rows::all(&mut session.conn, &format!("CHECK TABLE {name}"));
        let engine = engine.as_deref().unwrap_or("engine unknown");
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                findings.tables_checked += 1;
                findings
                    .damage
                    .push(format!("CHECK TABLE {name} ({engine}) failed: {e}"));
                continue;
            }
        };
        let ok = rows
            .last()
            .is_some_and(|(_, _, kind, text)| kind == "status" && text == "OK");
        let errors: Vec<&str> = rows
            .iter()
            .filter(|(_, _, kind, _)| kind.eq_ignore_ascii_case("error"))
            .map(|(_, _, _, text)| text.as_str())
            .collect();
        if !ok || !errors.is_empty() {
            let said: Vec<String> = rows
                .iter()
                .map(|(_, _, kind, text)| format!("{kind}: {text}"))
                .collect();
            if let Some(library) = errors.iter().find_map(|e| plugin_not_loaded(session, e)) {
                findings.unchecked.push((name, library));
                continue;
            }
            findings.damage.push(format!(
                "CHECK TABLE {name} ({engine}): {}",
                said.join("; ")
            ));
        } else if rows.iter().any(|(_, _, kind, _)| kind == "warning") {
            unclosed += 1;
        }
        findings.tables_checked += 1;
    }
    let which = if thorough {
        "every"
    } else {
        "every non-transactional"
    };
    if findings.damage.len() == damaged_before && findings.unchecked.is_empty() {
        findings.passed.push(format!(
            "CHECK TABLE passed on {which} table ({})",
            listed.len()
        ));
    }
    if unclosed > 0 {
        findings.warnings.push(format!(
            "{unclosed} tables passed CHECK TABLE with a warning (not closed properly: the copy was cut while they were open)"
        ));
    }
}

/// The plugin library of the engine an `Unknown storage engine 'NAME'` error names, when the
/// booted server has that plugin but has not loaded it (MariaDB's `ALL_PLUGINS`). `None` for any
/// other error, and for an engine no plugin provides: a damaged table definition is damage.
fn plugin_not_loaded(session: &mut Session, error: &str) -> Option<String> {
    let (_, rest) = error.split_once("Unknown storage engine '")?;
    let engine = rest.split('\'').next()?;
    let statement = format!(
        "SELECT PLUGIN_LIBRARY FROM information_schema.ALL_PLUGINS \
         WHERE PLUGIN_TYPE = 'STORAGE ENGINE' AND PLUGIN_NAME = {} AND PLUGIN_STATUS <> 'ACTIVE'",
        server::quote(engine)
    );
    common::rows::first::<(Option<String>,)>(&mut session.conn, &statement)
        .ok()
        .flatten()
        .and_then(|(library,)| library)
}

/// A quoted identifier.
fn identifier(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// MySQL: the copy's `auto.cnf` (read from the copy itself) names the server the info file records.
pub(crate) fn server_uuid(copy: &Copy, held: &InfoFile, findings: &mut Findings) {
    let Some(recorded) = &held.server.server_uuid else {
        return;
    };
    let text = std::fs::read_to_string(copy.datadir.join("auto.cnf")).unwrap_or_default();
    let uuid = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server-uuid="))
        .map(str::trim);
    match uuid {
        Some(uuid) if uuid == recorded => findings
            .passed
            .push(format!("auto.cnf names the recorded server_uuid {uuid}")),
        Some(uuid) => findings.mismatch.push(format!(
            "auto.cnf names server_uuid {uuid}; the info file records {recorded}: the copy is another server's"
        )),
        None => findings.warnings.push(format!(
            "the copy has no auto.cnf to compare with the recorded server_uuid {recorded}"
        )),
    }
}

/// The copy's binlog end (read before the boot) against the held record's position: equal when
/// `exact`, at or past it when a lower bound.
pub(crate) fn binlog(copy: &Copy, held: &InfoFile, findings: &mut Findings) {
    let (Some(file), Some(position)) = (&held.binlog.file, held.binlog.position) else {
        return;
    };
    let exact = held.binlog.exact != Some(false);
    let Some(copy_binlog) = &copy.binlog else {
        findings.mismatch.push(format!(
            "the info file records binlog {file}:{position}, but the copy has no binary log"
        ));
        return;
    };
    match &copy_binlog.end {
        Err(why) => findings.damage.push(why.clone()),
        Ok((end_file, size)) => {
            let agrees = match exact {
                true => end_file == file && *size == position,
                false => (end_file.as_str(), *size) >= (file.as_str(), position),
            };
            let relation = if exact { "equal to" } else { "at or past" };
            let said = format!(
                "the copy's binlog ends at {end_file}:{size}; the info file records {file}:{position} ({})",
                if exact { "exact" } else { "a lower bound" }
            );
            match agrees {
                true => findings.passed.push(format!("{said}: {relation} it")),
                false => findings.mismatch.push(format!(
                    "{said}: not {relation} it — the copy was taken at another moment"
                )),
            }
        }
    }
}

/// The copy's executed GTID state against the held record's: equal when exact, containing it
/// when a lower bound; and MariaDB's replica position (`gtid_slave_pos`).
pub(crate) fn gtid(session: &mut Session, held: &InfoFile, findings: &mut Findings) {
    let exact = held.gtid.exact != Some(false);
    let mut pairs = vec![];
    match session.info.flavor {
        Flavor::MariaDb => {
            pairs.push(("@@GLOBAL.gtid_binlog_pos", held.gtid.binlog_pos.as_deref()));
            pairs.push(("@@GLOBAL.gtid_slave_pos", held.gtid.slave_pos.as_deref()));
        }
        Flavor::MySql => pairs.push(("@@GLOBAL.gtid_executed", held.gtid.executed.as_deref())),
    }
    for (variable, recorded) in pairs {
        let Some(recorded) = recorded else { continue };
        let value: Result<Option<Option<String>>, _> =
            session.query_first(&format!("SELECT {variable}"));
        let value = match value {
            Ok(value) => value.flatten().unwrap_or_default(),
            Err(e) => {
                findings
                    .damage
                    .push(format!("SELECT {variable} failed on the copy: {e}"));
                continue;
            }
        };
        if variable != "@@GLOBAL.gtid_slave_pos" {
            findings.recovered_gtid = Some(normalized(&value));
        }
        let agrees = match exact {
            true => normalized(&value) == normalized(recorded),
            false => contains(session.info.flavor, &value, recorded),
        };
        let shown = |set: &str| match normalized(set) {
            empty if empty.is_empty() => "empty".to_string(),
            set => format!("`{set}`"),
        };
        let said = format!(
            "{variable} of the copy is {}; the info file records {}",
            shown(&value),
            shown(recorded)
        );
        match (agrees, exact) {
            (true, true) => findings.passed.push(format!("{said}: equal")),
            (true, false) => findings
                .passed
                .push(format!("{said}: it contains that lower bound")),
            (false, true) => findings.mismatch.push(format!("{said}: not equal")),
            (false, false) => findings
                .mismatch
                .push(format!("{said}: it does not contain that lower bound")),
        }
    }
}

/// The copy's replication connections against the held record's `replicas`.
pub(crate) fn replicas(session: &mut Session, held: &InfoFile, findings: &mut Findings) {
    let mut found: Vec<Replica> = Vec::new();
    for statement in replication::status_statements(&session.info) {
        match common::rows::all::<mysql::Row>(&mut session.conn, statement) {
            Ok(rows) => {
                found = rows
                    .iter()
                    .map(|r| Replica::from_row(&replication::status_row(r)))
                    .collect();
                break;
            }
            Err(e) => findings
                .warnings
                .push(format!("{statement} failed on the copy: {e}")),
        }
    }
    if held.replicas.is_empty() && found.is_empty() {
        return;
    }
    let by_name: BTreeMap<&str, &Replica> = found.iter().map(|r| (r.name.as_str(), r)).collect();
    for recorded in &held.replicas {
        let label = match recorded.name.as_str() {
            "" => "the default replication connection".to_string(),
            name => format!("replication connection `{name}`"),
        };
        let Some(copy) = by_name.get(recorded.name.as_str()) else {
            findings
                .mismatch
                .push(format!("{label} is recorded but missing from the copy"));
            continue;
        };
        let source = |r: &Replica| {
            format!(
                "{}:{}",
                r.source_host.as_deref().unwrap_or("-"),
                r.source_port.map_or("-".into(), |p| p.to_string())
            )
        };
        if source(copy) != source(recorded) {
            findings.mismatch.push(format!(
                "{label} replicates from {} in the copy; the info file records {}",
                source(copy),
                source(recorded)
            ));
            continue;
        }
        if recorded.uses_gtid() {
            // It resumes from the GTID state checked above; its status row's GTID column mixes
            // in the server's own commits by server id, which the booted copy does not share.
            findings.passed.push(format!(
                "{label} replicates from {} by GTID (it resumes from the GTID state checked above)",
                source(copy)
            ));
            continue;
        }
        let exact = recorded.executed.exact != Some(false);
        let (rec, got) = (
            (
                recorded.executed.file.as_deref(),
                recorded.executed.position,
            ),
            (copy.executed.file.as_deref(), copy.executed.position),
        );
        let agrees = if exact { got == rec } else { got >= rec };
        let said = format!(
            "{label} executed up to {}:{} in the copy; the info file records {}:{}",
            got.0.unwrap_or("-"),
            got.1.map_or("-".into(), |p| p.to_string()),
            rec.0.unwrap_or("-"),
            rec.1.map_or("-".into(), |p| p.to_string())
        );
        match agrees {
            true => findings.passed.push(said),
            false => findings.mismatch.push(said),
        }
        if copy.io_running.as_deref() == Some("Yes") || copy.sql_running.as_deref() == Some("Yes") {
            findings
                .warnings
                .push(format!("{label} is running on the booted copy"));
        }
    }
    for copy in &found {
        if !held.replicas.iter().any(|r| r.name == copy.name) {
            findings.mismatch.push(format!(
                "the copy has a replication connection `{}` the info file does not record",
                copy.name
            ));
        }
    }
}

/// Galera: the copy's grastate.dat names the cluster the info file records.
pub(crate) fn galera(copy: &Copy, held: &InfoFile, findings: &mut Findings) {
    let Some(galera) = &held.galera else { return };
    let grastate = std::fs::read_to_string(copy.datadir.join("grastate.dat"));
    let uuid = grastate.as_ref().ok().and_then(|text| {
        text.lines()
            .find_map(|l| l.strip_prefix("uuid:"))
            .map(|u| u.trim().to_string())
    });
    match uuid {
        Some(uuid) if uuid == galera.cluster_uuid => findings
            .passed
            .push(format!("grastate.dat names the recorded cluster {uuid}")),
        Some(uuid) => findings.mismatch.push(format!(
            "grastate.dat names cluster {uuid}; the info file records {}",
            galera.cluster_uuid
        )),
        None => findings.warnings.push(
            "the copy has no readable grastate.dat: write the recorded one before the node's first start".into(),
        ),
    }
}

/// A GTID set with whitespace removed and its members sorted.
pub(crate) fn normalized(set: &str) -> String {
    let compact: String = set.chars().filter(|c| !c.is_whitespace()).collect();
    let mut parts: Vec<&str> = compact.split(',').filter(|p| !p.is_empty()).collect();
    parts.sort_unstable();
    parts.join(",")
}

/// Whether GTID state `copy` contains `recorded`: MariaDB positions domain by domain (a sequence
/// number at or past the recorded one), MySQL sets interval by interval.
pub(crate) fn contains(flavor: Flavor, copy: &str, recorded: &str) -> bool {
    match flavor {
        Flavor::MariaDb => {
            let domains = mariadb_positions(copy);
            mariadb_positions(recorded)
                .iter()
                .all(|(domain, seq)| domains.get(domain).is_some_and(|s| s >= seq))
        }
        Flavor::MySql => {
            let have = mysql_set(copy);
            mysql_set(recorded).iter().all(|(source, ranges)| {
                ranges.iter().all(|(lo, hi)| {
                    have.get(source)
                        .is_some_and(|h| h.iter().any(|(a, b)| a <= lo && hi <= b))
                })
            })
        }
    }
}

/// `domain-server-seq,…` as domain → highest seq.
fn mariadb_positions(text: &str) -> BTreeMap<u64, u64> {
    let mut out = BTreeMap::new();
    for gtid in normalized(text).split(',').filter(|g| !g.is_empty()) {
        let parts: Vec<u64> = gtid.split('-').filter_map(|p| p.parse().ok()).collect();
        if let [domain, _, seq] = parts[..] {
            let entry = out.entry(domain).or_insert(seq);
            *entry = (*entry).max(seq);
        }
    }
    out
}

/// `uuid[:tag]:a-b:c,…` as `uuid[:tag]` → intervals (merged where adjacent).
fn mysql_set(text: &str) -> BTreeMap<String, Vec<(u64, u64)>> {
    let mut out: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    for member in normalized(text).split(',').filter(|m| !m.is_empty()) {
        let mut parts = member.split(':');
        let Some(uuid) = parts.next() else { continue };
        let mut source = uuid.to_ascii_lowercase();
        for part in parts {
            let range = match part.split_once('-') {
                Some((a, b)) => a.parse().ok().zip(b.parse().ok()),
                None => part.parse().ok().map(|n| (n, n)),
            };
            match range {
                Some(range) => out.entry(source.clone()).or_default().push(range),
                None => source = format!("{}:{}", uuid.to_ascii_lowercase(), part),
            }
        }
    }
    for ranges in out.values_mut() {
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (lo, hi) in ranges.drain(..) {
            match merged.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        *ranges = merged;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mariadb_position_contains_another_domain_by_domain() {
        assert!(contains(Flavor::MariaDb, "0-1-10,1-2-5", "0-1-7"));
        assert!(contains(Flavor::MariaDb, "0-1-10", "0-1-10"));
        assert!(!contains(Flavor::MariaDb, "0-1-6", "0-1-7"));
        assert!(!contains(Flavor::MariaDb, "0-1-10", "0-1-7,2-1-1"));
        assert!(contains(Flavor::MariaDb, "", ""));
    }

    #[test]
    fn a_mysql_set_contains_another_interval_by_interval_whatever_its_spelling() {
        let u = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        let copy = format!("{u}:1-10:12-20,\n{}:tag:1-3", u.to_uppercase());
        assert!(contains(Flavor::MySql, &copy, &format!("{u}:1-5")));
        assert!(contains(Flavor::MySql, &copy, &format!("{u}:14-20:1")));
        assert!(contains(Flavor::MySql, &copy, &format!("{u}:tag:2")));
        assert!(!contains(Flavor::MySql, &copy, &format!("{u}:1-12")));
        assert!(!contains(Flavor::MySql, &copy, &format!("{u}:other:1")));
        assert!(contains(
            Flavor::MySql,
            &format!("{u}:1-3:4-9"),
            &format!("{u}:2-8")
        ));
    }

    #[test]
    fn the_error_log_tells_damage_from_a_crash() {
        let mut findings = Findings::default();
        error_log(
            "2026-12-07 [Note] InnoDB: Starting crash recovery from checkpoint LSN=1\n\
             2026-12-07 [ERROR] mariadbd: Table './snap/my' is marked as crashed and should be repaired\n\
             2026-12-07 [ERROR] Something else\n",
            &mut findings,
        );
        assert_eq!(findings.damage.len(), 1, "{:?}", findings.damage);
        assert_eq!(findings.warnings.len(), 1, "{:?}", findings.warnings);
        assert!(findings.passed[0].contains("crash recovery ran"));
    }
}
