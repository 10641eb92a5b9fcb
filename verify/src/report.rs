//! The verdict on a copy and the report a person and a script read: text or `--json`, the exit
//! code (documented in `common::error`), and for a consistent copy the statements that make it a
//! replica and the steps before its first start.
//!
//! It decides from the findings and the info file only; it never touches the copy or a server.
use std::path::PathBuf;
use std::time::Duration;

use common::error::{EXIT_CRASH_CONSISTENT, EXIT_DAMAGED};
use common::info_file::{self, InfoFile};
use common::metrics::Verified;
use common::position::{Binlog, Gtid};
use common::replication::{self, SeedSql, SourceAddress};
use common::server::{Flavor, ServerInfo};
use serde::Serialize;

use crate::checks::Findings;
use crate::copy::Copy;

/// The verdict and why (empty for consistent).
pub(crate) struct Verdict {
    pub(crate) kind: Verified,
    pub(crate) why: Vec<String>,
}

impl Verdict {
    /// Damage first; then whether a lock covered the copy (the info file's word) and whether
    /// the copy is at the moment it records.
    pub(crate) fn of(copy: &Copy, findings: &Findings) -> Verdict {
        if !findings.damage.is_empty() {
            return Verdict {
                kind: Verified::Damaged,
                why: findings.damage.clone(),
            };
        }
        let mut why = Vec::new();
        match &copy.info {
            None => why.push(format!(
                "no info file in the copy (looked at {}): nothing says a lock covered it",
                copy.looked_at
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Some(info) => {
                let (consistent, said) = info_file::verdict(info);
                if !consistent {
                    why.push(format!("the info file says {said}"));
                }
            }
        }
        why.extend(findings.mismatch.iter().cloned());
        Verdict {
            kind: match why.is_empty() {
                true => Verified::Consistent,
                false => Verified::CrashConsistent,
            },
            why,
        }
    }

    pub(crate) fn exit_code(&self) -> u8 {
        match self.kind {
            Verified::Consistent => 0,
            Verified::CrashConsistent => EXIT_CRASH_CONSISTENT,
            Verified::Damaged => EXIT_DAMAGED,
        }
    }
}

/// Everything the report says, as `--json` prints it.
#[derive(Serialize)]
pub(crate) struct Report {
    pub(crate) verdict: &'static str,
    pub(crate) why: Vec<String>,
    pub(crate) path: PathBuf,
    pub(crate) datadir: PathBuf,
    pub(crate) info_file: Option<PathBuf>,
    /// The info file's own word (`held since …`, `released since …: why`).
    pub(crate) info_says: Option<String>,
    pub(crate) server: String,
    pub(crate) layer: String,
    pub(crate) checked: Vec<String>,
    pub(crate) warnings: Vec<String>,
    pub(crate) notes: Vec<String>,
    pub(crate) tables_checked: usize,
    pub(crate) boot_ms: u128,
    pub(crate) took_ms: u128,
    /// For a consistent copy: what to do before it first starts as a server of its own.
    pub(crate) before_first_start: Vec<String>,
    /// For a consistent copy: the statements that make it a replica of the snapshotted server.
    pub(crate) seed_replica_sql: Option<SeedSql>,
    /// For a consistent copy of a replica: the statements that make it a sibling replica.
    pub(crate) clone_replica_sql: Option<Vec<String>>,
    /// For a consistent copy of a Galera node: the grastate.dat to write before its first start.
    pub(crate) grastate: Option<String>,
}

impl Report {
    /// The steps and statements a consistent copy comes with (nothing for any other verdict).
    pub(crate) fn restore_steps(
        &mut self,
        verdict: &Verdict,
        held: Option<&InfoFile>,
        flavor: Flavor,
    ) {
        let (Verified::Consistent, Some(held)) = (verdict.kind, held) else {
            return;
        };
        let mut steps = vec![format!(
            "give it a server_id of its own in its configuration (the copy's is {})",
            held.server
                .server_id
                .map_or("not recorded".to_string(), |id| id.to_string())
        )];
        steps.push(match flavor {
            Flavor::MySql => "delete auto.cnf from its datadir, so that it makes a server_uuid of its own".into(),
            Flavor::MariaDb => "delete auto.cnf from its datadir if there is one (MariaDB keeps no server_uuid there)".into(),
        });
        steps.push(match flavor {
            Flavor::MySql => "start it with skip_replica_start = ON, so that no copied replication channel starts".into(),
            Flavor::MariaDb => "start it with skip_slave_start = ON, so that no copied replication connection starts".into(),
        });
        if let Some(galera) = &held.galera {
            steps.push("write the grastate.dat below into its datadir before it joins the cluster, or it needs a full SST".into());
            self.grastate = galera.grastate.clone();
        }
        self.before_first_start = steps;
        self.seed_replica_sql = held.seed_replica_sql.clone();
        self.clone_replica_sql = held.clone_replica_sql.clone();
    }

    /// With a lower bound recorded (`lock-mode = backup-lock`), the statements at the coordinates
    /// the copy recovered, which the checks found at or past that bound: its binlog end and GTID
    /// state are exact for this copy.
    pub(crate) fn seed_at_recovered(
        &mut self,
        held: &InfoFile,
        end: Option<&(String, u64)>,
        recovered_gtid: Option<&str>,
    ) {
        let (Some(recorded), Some((file, size))) = (&self.seed_replica_sql, end) else {
            return;
        };
        if held.binlog.exact != Some(false) {
            return;
        }
        let info = ServerInfo::new(held.server.version.clone(), 0);
        let binlog = Binlog {
            file: Some(file.clone()),
            position: Some(*size),
            exact: Some(true),
        };
        let gtid = match info.flavor {
            Flavor::MySql => Gtid {
                executed: recovered_gtid.map(str::to_string),
                ..Gtid::default()
            },
            Flavor::MariaDb => Gtid {
                binlog_pos: recovered_gtid.map(str::to_string),
                ..Gtid::default()
            },
        };
        let source = SourceAddress {
            host: &held.hostname,
            port: recorded_port(recorded),
        };
        if let Some(seed) = replication::seed_replica_sql(&info, &source, &binlog, &gtid) {
            self.seed_replica_sql = Some(seed);
            self.notes.push(format!(
                "the info file's coordinates are a lower bound: the replica statements carry the ones this copy recovered ({file}:{size})"
            ));
        }
    }

    /// The report for a person.
    pub(crate) fn text(&self) -> String {
        let mut out = format!(
            "{}: {}\n",
            self.path.display(),
            self.verdict.to_ascii_uppercase()
        );
        for why in &self.why {
            out.push_str(&format!("  why: {why}\n"));
        }
        out.push_str(&format!("  datadir: {}\n", self.datadir.display()));
        match (&self.info_file, &self.info_says) {
            (Some(path), Some(says)) => {
                out.push_str(&format!("  info file: {} ({says})\n", path.display()))
            }
            (Some(path), None) => {
                out.push_str(&format!("  info file: {} (unreadable)\n", path.display()))
            }
            _ => out.push_str("  info file: none\n"),
        }
        out.push_str(&format!("  server: {}\n", self.server));
        out.push_str(&format!("  layer: {}\n", self.layer));
        for (label, lines) in [
            ("checked", &self.checked),
            ("warning", &self.warnings),
            ("note", &self.notes),
        ] {
            for line in lines {
                out.push_str(&format!("  {label}: {line}\n"));
            }
        }
        out.push_str(&format!(
            "  took {} (the boot and crash recovery {})\n",
            seconds(self.took_ms),
            seconds(self.boot_ms)
        ));
        if !self.before_first_start.is_empty() {
            out.push_str("\nBefore its first start as a server of its own:\n");
            for (i, step) in self.before_first_start.iter().enumerate() {
                out.push_str(&format!("  {}. {step}\n", i + 1));
            }
        }
        if let Some(grastate) = &self.grastate {
            out.push_str("\ngrastate.dat:\n");
            out.push_str(grastate);
        }
        if let Some(seed) = &self.seed_replica_sql {
            out.push_str("\nTo make it a replica of the snapshotted server (its coordinates checked above), binlog file and position:\n");
            for line in &seed.binlog_position {
                out.push_str(&format!("  {line}\n"));
            }
            if let Some(gtid) = &seed.gtid {
                out.push_str("or with GTIDs:\n");
                for line in gtid {
                    out.push_str(&format!("  {line}\n"));
                }
            }
        }
        if let Some(clone) = &self.clone_replica_sql {
            out.push_str("\nTo make it a sibling replica of the same source(s):\n");
            for line in clone {
                out.push_str(&format!("  {line}\n"));
            }
        }
        out
    }
}

/// The source port the recorded statements name (3306 when they name none).
fn recorded_port(seed: &SeedSql) -> u64 {
    seed.binlog_position
        .iter()
        .find_map(|line| line.split("_PORT = ").nth(1))
        .and_then(|rest| rest.split(',').next())
        .and_then(|port| port.trim().parse().ok())
        .unwrap_or(3306)
}

fn seconds(ms: u128) -> String {
    format!("{:.1} s", Duration::from_millis(ms as u64).as_secs_f64())
}
