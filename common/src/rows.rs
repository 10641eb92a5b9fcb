//! Reading a server's answer without panicking: the driver's typed reads panic on a row or value
//! that does not convert (a NULL, a negative number, text that is not UTF-8), and `clippy.toml`
//! keeps them out of the binaries. Every read on a bare connection goes through here (a
//! `server::Session` converts its answers the same way).
//!
//! It owns no state and sends only the statement it is given.
use mysql::prelude::Queryable;
use mysql::Conn;

/// `statement`'s rows as `T`, asked on `conn` now. A row that does not convert (a NULL, a
/// negative number or text that is not UTF-8 where `T` has none) is an error naming the row,
/// never a panic: the driver's typed `query` panics on such a row.
pub fn all<T: mysql::prelude::FromRow>(conn: &mut Conn, statement: &str) -> mysql::Result<Vec<T>> {
    // Rows as `mysql::Row`: nothing converted, nothing to panic on.
    #[allow(clippy::disallowed_methods)]
    let rows = conn.query::<mysql::Row, _>(statement)?;
    rows.into_iter().map(converted).collect()
}

/// `statement`'s first row as `T`, asked on `conn` now (see [`all`]).
pub fn first<T: mysql::prelude::FromRow>(
    conn: &mut Conn,
    statement: &str,
) -> mysql::Result<Option<T>> {
    all::<mysql::Row>(conn, statement)?
        .into_iter()
        .next()
        .map(converted)
        .transpose()
}

/// The prepared `statement`'s first row with `params`, as `T` (see [`all`]).
pub fn exec_first<T: mysql::prelude::FromRow>(
    conn: &mut Conn,
    statement: &str,
    params: impl Into<mysql::Params>,
) -> mysql::Result<Option<T>> {
    // A `mysql::Row`: nothing converted, nothing to panic on.
    #[allow(clippy::disallowed_methods)]
    let row = conn.exec_first::<mysql::Row, _, _>(statement, params)?;
    row.map(converted).transpose()
}

/// `row` as `T`, or an error naming it.
pub fn converted<T: mysql::prelude::FromRow>(row: mysql::Row) -> mysql::Result<T> {
    mysql::from_row_opt(row).map_err(|e| mysql::Error::FromRowError(e.0))
}
