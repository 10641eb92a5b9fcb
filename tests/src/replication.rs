//! A MariaDB replication source for the tests: a private server that also listens on a loopback
//! port (replication needs TCP), with a replication account and the `snap.feed` table the tests
//! write to, and the statement that points a replica at it.
use mysql::prelude::Queryable;

use crate::Server;

/// The replication account's password (a test secret, on loopback only).
pub const REPL_PASSWORD: &str = "repl-pw-5e6";

/// A source started with `extra` mariadbd arguments, and its port.
pub struct Source {
    pub server: Server,
    pub port: u16,
}

impl Source {
    /// Starts the source (binary log on, server id 1) with the `repl` account and `snap.feed`.
    pub fn start(extra: &[&str]) -> Source {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let port_arg = format!("--port={port}");
        let mut args = vec![
            "--log-bin=binlog",
            "--server-id=1",
            "--skip-networking=0",
            "--bind-address=127.0.0.1",
            &port_arg,
        ];
        args.extend_from_slice(extra);
        let server = Server::start_with(&args);
        server
            .conn()
            .query_drop(format!(
                "CREATE USER 'repl'@'127.0.0.1' IDENTIFIED BY '{REPL_PASSWORD}';
                 GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1';
                 CREATE TABLE snap.feed (id INT AUTO_INCREMENT PRIMARY KEY, v INT) ENGINE=InnoDB;"
            ))
            .unwrap();
        Source { server, port }
    }

    /// Makes `replica` replicate from this source by GTID, and starts it.
    pub fn attach(&self, replica: &Server) {
        replica
            .conn()
            .query_drop(format!(
                "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='repl',
                 MASTER_PASSWORD='{REPL_PASSWORD}', MASTER_USE_GTID=slave_pos; START SLAVE;",
                self.port
            ))
            .unwrap();
    }
}
