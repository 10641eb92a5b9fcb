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
