//! Statements sent together (`common::batch`: the locker's checks before the lock, and the lock
//! with the reads it makes exact) behave exactly as if sent one by one and stopped at the first
//! error: in order, nothing after a failure, each answer what that statement alone gives, and a
//! statement without an answer asked of the server again.

use common::batch::Answers;
use harness::Server;
use mysql::prelude::Queryable;

/// `@name` on `conn`, NULL as `None`.
fn user_variable(conn: &mut mysql::Conn, name: &str) -> Option<i64> {
    conn.query_first::<Option<i64>, _>(format!("SELECT @{name}"))
        .unwrap()
        .flatten()
}

#[test]
fn a_batch_runs_in_order_and_nothing_after_the_first_failure() {
    let server = Server::start();
    let mut conn = server.conn();
    let count = "SET @n = IFNULL(@n, 0) + 1".to_string();
    let unknown = "SELECT @@GLOBAL.no_such_variable".to_string();
    let after = "SET @after = 1".to_string();
    let (mut answers, failed) = Answers::fetch(
        &mut conn,
        &[
            count.clone(),
            "SELECT @n".into(),
            unknown.clone(),
            after.clone(),
        ],
    );
    let failed = failed.expect("the unknown variable must fail the batch");
    assert_eq!(failed.index, 2, "the failure is placed at its statement");
    assert_eq!(user_variable(&mut conn, "n"), Some(1), "the first ran once");
    assert_eq!(
        user_variable(&mut conn, "after"),
        None,
        "nothing runs after a failed statement"
    );
    let seen: Option<i64> = answers.query_first(&mut conn, "SELECT @n").unwrap();
    assert_eq!(
        seen,
        Some(1),
        "a later statement sees what an earlier one did"
    );

    // The failed statement's answer is its own error, given without asking again.
    let err = answers.query(&mut conn, &unknown).unwrap_err();
    assert_eq!(common::server::error_code(&err), Some(1193), "{err}");

    // An answer is handed out once: asked again, the statement goes to the server.
    answers.query_drop(&mut conn, &count).unwrap();
    assert_eq!(
        user_variable(&mut conn, "n"),
        Some(1),
        "an answer costs no round trip"
    );
    answers.query_drop(&mut conn, &count).unwrap();
    assert_eq!(
        user_variable(&mut conn, "n"),
        Some(2),
        "a spent answer is asked again"
    );
    // A statement the batch never reached runs when asked for.
    answers.query_drop(&mut conn, &after).unwrap();
    assert_eq!(user_variable(&mut conn, "after"), Some(1));
}

/// What the locker still waits for before a lock (the tables scan, in the modes where it only
/// informs the info file) runs after the lock's statements that block no commit and before the
/// one that does: writers flow while it runs, and are blocked once `acquire` returns.
#[test]
fn what_the_lock_waits_for_runs_after_the_statements_that_block_no_commit_and_before_the_one_that_does(
) {
    use common::lock::{Attempt, LockMode};
    let server = Server::start();
    let mut probe = server.conn();
    for (mode, pre_flush, before) in [
        (LockMode::BackupStage, false, "BACKUP STAGE BLOCK_DDL"),
        (LockMode::Ftwrl, true, "FLUSH NO_WRITE_TO_BINLOG TABLES"),
        (LockMode::Ftwrl, false, "nothing"),
    ] {
        let mut conn = server.conn();
        let mut ran = 0;
        let mut wait = |lock: &mut mysql::Conn| {
            ran += 1;
            assert!(
                !server.writes_blocked_on(&mut probe),
                "{mode:?}: a commit waited while the lock's caller did, after {before}"
            );
            // The wait may use the lock's connection: it is between two statements.
            let one: Option<u8> = lock.query_first("SELECT 1").unwrap();
            assert_eq!(one, Some(1));
        };
        let (attempt, mut answers) = mode
            .acquire(
                &mut conn,
                pre_flush,
                &["SELECT 2".to_string()],
                Some(&mut wait),
            )
            .unwrap();
        assert!(
            matches!(attempt, Attempt::Acquired),
            "{mode:?}: {attempt:?}"
        );
        assert_eq!(ran, 1, "{mode:?}: the wait runs once");
        let two: Option<u8> = answers.query_first(&mut conn, "SELECT 2").unwrap();
        assert_eq!(two, Some(2), "the reads still travel with the lock");
        assert!(
            server.writes_blocked(),
            "{mode:?}: writes must be blocked once acquire returns"
        );
        mode.release(&mut conn).unwrap();
        assert!(!server.writes_blocked(), "{mode:?}: released");
    }
}
