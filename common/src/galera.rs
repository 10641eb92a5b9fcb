//! Galera (MariaDB Galera Cluster, Percona XtraDB Cluster): is this server a node, is it fit to be
//! snapshotted, and the exact cluster position of the snapshot.
//!
//! Owns reading the node's wsrep status before the lock (a node that is not `Synced` — a joiner
//! or a donor — is refused: the copy would be of a node mid-transfer) and `wsrep_last_committed`
//! while the lock blocks commits (then `cluster uuid:last_committed` is the node's exact
//! position), and the `grastate.dat` text a restored node needs to rejoin by IST. It never
//! touches the live `grastate.dat` and never changes a wsrep setting.
use mysql::Conn;
use serde::{Deserialize, Serialize};

use crate::error::NoLock;
use crate::{Error, Result};

/// The status variables read before the lock.
const STATUS: [&str; 5] = [
    "wsrep_cluster_state_uuid",
    "wsrep_local_state_comment",
    "wsrep_cluster_size",
    "wsrep_local_cached_downto",
    "wsrep_ready",
];

/// The node as it was before the lock, and its position while locked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Galera {
    pub cluster_uuid: String,
    pub node_name: Option<String>,
    pub local_state_comment: String,
    pub cluster_size: Option<u64>,
    pub local_cached_downto: Option<i64>,
    /// `wsrep_last_committed` read while commits were blocked: the copy's exact seqno.
    pub last_committed: Option<i64>,
    /// `grastate.dat` for a node restored from the copy (write it into its datadir to rejoin by IST).
    pub grastate: Option<String>,
}

/// `rows` of `SHOW GLOBAL VARIABLES` (which include `wsrep_on` and `wsrep_node_name`): is this a
/// Galera node?
pub fn is_node(rows: &[(String, Option<String>)]) -> bool {
    value(rows, "wsrep_on").is_some_and(|v| v.eq_ignore_ascii_case("ON") || v == "1")
}

fn value<'a>(rows: &'a [(String, Option<String>)], name: &str) -> Option<&'a str> {
    rows.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.as_deref())
}

impl Galera {
    /// The node from `SHOW GLOBAL STATUS` rows (`status`) and its variables (`variables`).
    pub fn from_rows(
        status: &[(String, Option<String>)],
        variables: &[(String, Option<String>)],
    ) -> Galera {
        Galera {
            cluster_uuid: value(status, "wsrep_cluster_state_uuid")
                .unwrap_or_default()
                .to_string(),
            node_name: value(variables, "wsrep_node_name").map(String::from),
            local_state_comment: value(status, "wsrep_local_state_comment")
                .unwrap_or("unknown")
                .to_string(),
            cluster_size: value(status, "wsrep_cluster_size").and_then(|v| v.parse().ok()),
            local_cached_downto: value(status, "wsrep_local_cached_downto")
                .and_then(|v| v.parse().ok()),
            last_committed: None,
            grastate: None,
        }
    }

    /// Refuses a node that is not `Synced`, naming its state and what to do.
    pub fn check_synced(&self) -> Result<()> {
        if self.local_state_comment == "Synced" {
            return Ok(());
        }
        Err(Error::NotLocked(NoLock::GaleraNotSynced {
            state: self.local_state_comment.clone(),
        }))
    }

    /// Records `last_committed` (read while commits are blocked) and the grastate.dat it makes.
    pub fn set_position(&mut self, last_committed: i64) {
        self.last_committed = Some(last_committed);
        self.grastate = Some(format!(
            "# GALERA saved state\nversion: 2.1\nuuid:    {}\nseqno:   {last_committed}\nsafe_to_bootstrap: 0\n",
            self.cluster_uuid
        ));
    }
}

fn show_status(conn: &mut Conn, names: &[&str]) -> Result<Vec<(String, Option<String>)>> {
    crate::storage::show_global(conn, "STATUS", names)
}

/// The node's state before the lock; `variables` are the caller's `SHOW GLOBAL VARIABLES` rows.
pub fn read_before_lock(conn: &mut Conn, variables: &[(String, Option<String>)]) -> Result<Galera> {
    let status = show_status(conn, &STATUS)?;
    Ok(Galera::from_rows(&status, variables))
}

/// `wsrep_last_committed`, to be read while commits are blocked.
pub fn last_committed(conn: &mut Conn) -> Result<i64> {
    let rows = show_status(conn, &["wsrep_last_committed"])?;
    value(&rows, "wsrep_last_committed")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::Server {
            statement: "SHOW GLOBAL STATUS LIKE 'wsrep_last_committed'".into(),
            message: "the Galera node reported no wsrep_last_committed".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(list: &[(&str, &str)]) -> Vec<(String, Option<String>)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), Some(v.to_string())))
            .collect()
    }

    #[test]
    fn a_synced_node_passes_and_its_position_makes_a_grastate_for_ist() {
        let status = rows(&[
            (
                "wsrep_cluster_state_uuid",
                "6a5d3f0e-0000-11f0-9c00-aabbccddeeff",
            ),
            ("wsrep_local_state_comment", "Synced"),
            ("wsrep_cluster_size", "2"),
            ("wsrep_local_cached_downto", "1"),
        ]);
        let variables = rows(&[("wsrep_on", "ON"), ("wsrep_node_name", "node2")]);
        assert!(is_node(&variables));
        let mut node = Galera::from_rows(&status, &variables);
        assert!(node.check_synced().is_ok());
        assert_eq!(node.cluster_size, Some(2));
        node.set_position(1234);
        assert_eq!(
            node.grastate.as_deref(),
            Some("# GALERA saved state\nversion: 2.1\nuuid:    6a5d3f0e-0000-11f0-9c00-aabbccddeeff\nseqno:   1234\nsafe_to_bootstrap: 0\n")
        );
    }

    #[test]
    fn a_donor_or_joiner_is_refused_naming_its_state() {
        for state in ["Donor/Desynced", "Joining", "Joined", "Initialized"] {
            let node = Galera::from_rows(
                &rows(&[("wsrep_local_state_comment", state)]),
                &rows(&[("wsrep_on", "ON")]),
            );
            let err = node
                .check_synced()
                .expect_err("a node that is not Synced is refused")
                .to_string();
            assert!(err.contains("not Synced") && err.contains(state), "{err}");
        }
        assert!(!is_node(&rows(&[("wsrep_on", "OFF")])));
        assert!(!is_node(&[]));
    }
}
