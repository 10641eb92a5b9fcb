//! Group Replication (MySQL InnoDB Cluster): is this server a member, and is it fit to be locked.
//!
//! Owns the member's state as `performance_schema` shows it (read before the lock), the refusal
//! of a member whose applier queue is already past half of the flow-control threshold (FTWRL
//! blocks the member's applier, and past the threshold the whole group throttles its writers),
//! and the session setting that keeps the locker's own reads from waiting on the group. It never
//! changes a group setting. Group Replication cannot run from the packages on the test machines:
//! the parsing is unit-tested over the exact result shapes the server returns, and the detection
//! query runs for real on every MySQL test server (which is no member).
use serde::{Deserialize, Serialize};

use crate::error::NoLock;
use crate::server::Session;
use crate::{Error, Result};

/// The locker's session: its reads must not wait for the group's consistency guarantees. Fails
/// with 1193 (unknown variable) where the plugin is not loaded, which is fine.
pub const EVENTUAL: &str = "SET SESSION group_replication_consistency = 'EVENTUAL'";

/// This server's row of the members table, with its applier queue.
pub const MEMBER_QUERY: &str =
    "SELECT m.MEMBER_ROLE, m.MEMBER_STATE, s.COUNT_TRANSACTIONS_IN_QUEUE \
     FROM performance_schema.replication_group_members m \
     LEFT JOIN performance_schema.replication_group_member_stats s ON s.MEMBER_ID = m.MEMBER_ID \
     WHERE m.MEMBER_ID = @@GLOBAL.server_uuid";

/// The group settings, read only on a member.
pub const GROUP_QUERY: &str = "SELECT @@GLOBAL.group_replication_group_name, \
     @@GLOBAL.group_replication_flow_control_applier_threshold";

/// A member of a replication group, as recorded in the info file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub group_name: Option<String>,
    /// `PRIMARY` or `SECONDARY`.
    pub member_role: Option<String>,
    /// `ONLINE`, `RECOVERING`, `ERROR`…
    pub member_state: String,
    pub transactions_in_queue: Option<u64>,
    pub applier_threshold: Option<u64>,
}

/// The member row's columns: role, state, queue.
pub type MemberRow = (Option<String>, Option<String>, Option<u64>);
/// The group row's columns: group name, flow-control applier threshold.
pub type GroupRow = (Option<String>, Option<u64>);

impl Member {
    /// The member from its rows; `None` when the server is in no group (no row, or a row whose
    /// state is `OFFLINE`: the plugin is installed but not running).
    pub fn from_rows(member: Option<MemberRow>, group: Option<GroupRow>) -> Option<Member> {
        let (role, state, queue) = member?;
        let state = state.unwrap_or_default();
        if state.is_empty() || state.eq_ignore_ascii_case("OFFLINE") {
            return None;
        }
        let (group_name, threshold) = group.unwrap_or((None, None));
        Some(Member {
            group_name,
            member_role: role.filter(|r| !r.is_empty()),
            member_state: state,
            transactions_in_queue: queue,
            applier_threshold: threshold,
        })
    }

    /// Refuses a member whose applier queue is past half of the flow-control threshold: holding a
    /// lock there would make the whole group throttle its writers.
    pub fn check_queue(&self) -> Result<()> {
        let (Some(queue), Some(threshold)) = (self.transactions_in_queue, self.applier_threshold)
        else {
            return Ok(());
        };
        if threshold == 0 || queue <= threshold / 2 {
            return Ok(());
        }
        Err(Error::NotLocked(NoLock::GroupQueue { queue, threshold }))
    }
}

/// This server's membership, if any (MySQL only; the caller skips it on MariaDB).
/// The session's answers may hold `MEMBER_QUERY`'s rows.
pub fn read(session: &mut Session) -> Result<Option<Member>> {
    let member: Option<MemberRow> = match session.query_first(MEMBER_QUERY) {
        Ok(row) => row,
        // No performance_schema (or no such table): no group either.
        Err(e) if matches!(crate::server::error_code(&e), Some(1146 | 1142)) => return Ok(None),
        Err(e) => return Err(Error::server(MEMBER_QUERY, &e)),
    };
    if member.is_none() {
        return Ok(None);
    }
    let group: Option<GroupRow> = session.query_first(GROUP_QUERY).unwrap_or(None);
    Ok(Member::from_rows(member, group))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(role: &str, state: &str, queue: u64) -> Option<MemberRow> {
        Some((Some(role.into()), Some(state.into()), Some(queue)))
    }

    #[test]
    fn a_server_in_no_group_or_with_the_plugin_stopped_is_no_member() {
        // No row: the plugin is not installed (MySQL returns an empty set).
        assert_eq!(Member::from_rows(None, None), None);
        // The plugin installed, not started: one row, state OFFLINE, role empty.
        assert_eq!(
            Member::from_rows(
                Some((Some(String::new()), Some("OFFLINE".into()), None)),
                None
            ),
            None
        );
    }

    #[test]
    fn an_online_secondary_is_recorded_with_its_group_and_passes_with_a_short_queue() {
        let group = Some((
            Some("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee".into()),
            Some(25_000),
        ));
        let member =
            Member::from_rows(row("SECONDARY", "ONLINE", 12_500), group).expect("an ONLINE member");
        assert_eq!(member.member_role.as_deref(), Some("SECONDARY"));
        assert_eq!(
            member.group_name.as_deref(),
            Some("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee")
        );
        assert!(member.check_queue().is_ok(), "exactly half is still fine");
    }

    #[test]
    fn a_member_past_half_the_flow_control_threshold_is_refused_naming_both_numbers() {
        let group = Some((Some("g".into()), Some(25_000)));
        let member = Member::from_rows(row("PRIMARY", "ONLINE", 12_501), group).expect("member");
        let err = member
            .check_queue()
            .expect_err("past half the threshold")
            .to_string();
        assert!(err.contains("12501") && err.contains("25000"), "{err}");
        // No stats row (a member still joining): nothing to judge, no refusal.
        let joining =
            Member::from_rows(Some((None, Some("RECOVERING".into()), None)), None).expect("member");
        assert!(joining.check_queue().is_ok());
    }
}
