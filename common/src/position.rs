//! Where a server's history stands: a binary log position and GTID state, as read from the
//! server (exact while commits are blocked, a lower bound otherwise). Plain data shared by the
//! coordinates the locker reads and the replicas' rows; it asks the server nothing.
use serde::{Deserialize, Serialize};

/// Binary log position; both `None` when the binary log is off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binlog {
    pub file: Option<String>,
    pub position: Option<u64>,
    /// `true`: read while commits were blocked, the snapshot's exact position. `false`
    /// (`lock-mode = backup-lock`): a lower bound; the exact one is what the restored copy
    /// recovers. Absent where it does not apply (a replica's row, older files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<bool>,
}

/// GTID state (MariaDB's three positions, or MySQL's executed set).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gtid {
    pub binlog_pos: Option<String>,
    pub current_pos: Option<String>,
    pub slave_pos: Option<String>,
    pub executed: Option<String>,
    /// As `Binlog::exact`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<bool>,
}

/// MySQL prints long GTID sets over several lines.
pub fn strip_newlines(text: &str) -> String {
    text.chars().filter(|c| *c != '\n' && *c != '\r').collect()
}
