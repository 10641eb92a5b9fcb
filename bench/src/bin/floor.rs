//! The floor: the least any program can do to hold a snapshot lock — connect over the socket, take
//! the lock, read the binary-log status, say `locked`, and release when told. The benchmark times
//! mysql-snapshot against it.
//!
//! It must stay minimal (no config file, no state, no second process) and must never be installed
//! or used to take a real snapshot: it verifies nothing.
//!
//! Usage: `mysql-snapshot-bench-floor --socket S --mode ftwrl|backup-stage|backup-lock [--flavour mariadb|mysql]
//! [--user U] [--pre-flush] [--via-child]`. Prints `locked connect_us=… preflush_us=… lock_us=…
//! status_us=…` once the lock is held, releases on the first line (or end) of stdin, prints
//! `released release_us=…` and exits 0. Any failure prints `error …` to stdout and exits 1.
//! `--via-child` measures the least any two-process design pays (mysql-snapshot's freeze starts a
//! locker that outlives it): the floor starts a copy of itself, which holds the lock, and relays.
// A test or a benchmark may stop on a server answer it did not expect: the driver's typed
// reads that the binaries must never use (clippy.toml) are allowed here.
#![allow(clippy::disallowed_methods)]
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;
use mysql::{Conn, OptsBuilder, Row};

struct Args {
    socket: String,
    user: String,
    mode: String,
    flavour: String,
    pre_flush: bool,
    via_child: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        socket: String::new(),
        user: "root".into(),
        mode: "ftwrl".into(),
        flavour: "mariadb".into(),
        pre_flush: false,
        via_child: false,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        let mut value = || argv.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--socket" => args.socket = value()?,
            "--user" => args.user = value()?,
            "--mode" => args.mode = value()?,
            "--flavour" => args.flavour = value()?,
            "--pre-flush" => args.pre_flush = true,
            "--via-child" => args.via_child = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.socket.is_empty() {
        return Err("--socket is required".into());
    }
    Ok(args)
}

/// (statements that take the lock, the statement that releases it)
fn lock_statements(mode: &str) -> Result<(&'static [&'static str], &'static str), String> {
    match mode {
        "ftwrl" => Ok((&["FLUSH TABLES WITH READ LOCK"], "UNLOCK TABLES")),
        "backup-stage" => Ok((
            &[
                "BACKUP STAGE START",
                "BACKUP STAGE BLOCK_DDL",
                "BACKUP STAGE BLOCK_COMMIT",
            ],
            "BACKUP STAGE END",
        )),
        "backup-lock" => Ok((&["LOCK INSTANCE FOR BACKUP"], "UNLOCK INSTANCE")),
        other => Err(format!("unknown mode {other}")),
    }
}

fn status_statement(flavour: &str) -> Result<&'static str, String> {
    match flavour {
        "mariadb" => Ok("SHOW BINLOG STATUS"),
        "mysql" => Ok("SHOW BINARY LOG STATUS"),
        other => Err(format!("unknown flavour {other}")),
    }
}

fn micros(since: Instant) -> u128 {
    since.elapsed().as_micros()
}

/// `--via-child`: a copy of this program (without the flag) holds the lock; we relay its lines.
fn relay() -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    let mut child = Command::new(exe)
        .args(std::env::args().skip(1).filter(|a| a != "--via-child"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("start the child: {e}"))?;
    let mut to_child = child.stdin.take().ok_or("child stdin")?;
    let mut from_child = BufReader::new(child.stdout.take().ok_or("child stdout")?);
    let mut out = std::io::stdout().lock();
    let mut relay_line = |out: &mut std::io::StdoutLock| -> Result<(), String> {
        let mut line = String::new();
        from_child
            .read_line(&mut line)
            .map_err(|e| format!("child: {e}"))?;
        out.write_all(line.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| format!("stdout: {e}"))?;
        if line.starts_with("error") || line.is_empty() {
            return Err("the child failed".into());
        }
        Ok(())
    };
    relay_line(&mut out)?;
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    let _ = to_child.write_all(b"release\n");
    relay_line(&mut out)?;
    let status = child
        .wait()
        .map_err(|e| format!("wait for the child: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("the child exited with {status}"))
    }
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    if args.via_child {
        return relay();
    }
    let (take, release) = lock_statements(&args.mode)?;
    let status = status_statement(&args.flavour)?;
    let sql = |statement: &str, e: mysql::Error| format!("{statement}: {e}");

    let started = Instant::now();
    // The same connection options the product uses: nothing asked of the server on connect.
    let opts = OptsBuilder::new()
        .user(Some(&args.user))
        .socket(Some(&args.socket))
        .prefer_socket(false)
        .max_allowed_packet(Some(16 * 1024 * 1024))
        .read_timeout(Some(Duration::from_secs(60)));
    let mut conn = Conn::new(opts).map_err(|e| sql("connect", e))?;
    let connect_us = micros(started);

    let at = Instant::now();
    if args.pre_flush {
        let statement = "FLUSH NO_WRITE_TO_BINLOG TABLES";
        conn.query_drop(statement).map_err(|e| sql(statement, e))?;
    }
    let preflush_us = micros(at);

    let at = Instant::now();
    for statement in take {
        conn.query_drop(statement).map_err(|e| sql(statement, e))?;
    }
    let lock_us = micros(at);

    let at = Instant::now();
    let _row: Option<Row> = conn.query_first(status).map_err(|e| sql(status, e))?;
    let status_us = micros(at);

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "locked connect_us={connect_us} preflush_us={preflush_us} lock_us={lock_us} status_us={status_us}"
    )
    .and_then(|()| out.flush())
    .map_err(|e| format!("stdout: {e}"))?;

    // Hold until told (a line or the end of stdin).
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    let at = Instant::now();
    conn.query_drop(release).map_err(|e| sql(release, e))?;
    let release_us = micros(at);
    writeln!(out, "released release_us={release_us}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("stdout: {e}"))?;
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) if message == "the child failed" => ExitCode::from(1),
        Err(message) => {
            println!("error {message}");
            ExitCode::from(1)
        }
    }
}
