//! The many-tables figure: a server with 20,000 InnoDB tables and 200 MyISAM tables, every one of
//! them open (`table_open_cache = 20000`) and the MyISAM ones just written before each snapshot,
//! while 4 writers insert into another table. A lock that flushes tables (FTWRL, and the pre-flush
//! before it) must close them all; BACKUP STAGE does not. For each lock mode, with and without
//! the pre-flush where it applies: freeze latency and the writers' stall beyond the lock window,
//! each next to the floor taking the same lock the same way in the same run.
//!
//! It starts its own private server (the figure's tables never reach the other figures') and drops
//! it at the end; nothing here holds a lock except through the product and the floor program.
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;
use mysql::Conn;
use serde_json::json;

use crate::figures::{snapshot_beside, Bench, Outcome, Snapshotter, WRITERS};
use crate::flavour::Mode;
use crate::load::WriteLoad;
use crate::product::Product;
use crate::report::Row;
use crate::stats::{ms, Samples};

/// Measured runs per case at most (after one warm-up): each run reopens every table first.
const RUNS: usize = 10;
/// MyISAM tables beside the InnoDB ones.
const MYISAM: usize = 200;
/// Statements per round trip while creating and opening the tables.
const CHUNK: usize = 500;

/// Every table's name, MyISAM ones first.
fn tables(innodb: usize) -> Vec<(String, &'static str)> {
    (0..MYISAM)
        .map(|i| (format!("many.m{i}"), "MyISAM"))
        .chain((0..innodb).map(|i| (format!("many.t{i}"), "InnoDB")))
        .collect()
}

/// Runs `statements` in chunks, several per round trip.
fn run_chunked(conn: &mut Conn, statements: &[String]) -> Result<(), String> {
    for chunk in statements.chunks(CHUNK) {
        conn.query_drop(chunk.join(";\n"))
            .map_err(|e| format!("{}…: {e}", chunk[0]))?;
    }
    Ok(())
}

/// Opens every table and writes a row into each MyISAM one, so that a table flush has them all
/// to close and the MyISAM ones to write out.
fn open_all(conn: &mut Conn, tables: &[(String, &str)]) -> Result<(), String> {
    let statements: Vec<String> = tables
        .iter()
        .map(|(name, engine)| match *engine {
            "MyISAM" => format!("INSERT INTO {name} (v) VALUES (1)"),
            _ => format!("SELECT id FROM {name} LIMIT 1"),
        })
        .collect();
    let mut opened = 0;
    for chunk in statements.chunks(CHUNK) {
        let mut result = conn
            .query_iter(chunk.join(";\n"))
            .map_err(|e| format!("{}…: {e}", chunk[0]))?;
        while let Some(set) = result.iter() {
            for row in set {
                row.map_err(|e| format!("open the tables: {e}"))?;
            }
        }
        opened += chunk.len();
    }
    if opened != tables.len() {
        return Err(format!("opened {opened} of {} tables", tables.len()));
    }
    Ok(())
}

/// Tables the server has open now.
fn open_tables(conn: &mut Conn) -> u64 {
    conn.query_first::<(String, u64), _>("SHOW GLOBAL STATUS LIKE 'Open_tables'")
        .ok()
        .flatten()
        .map_or(0, |(_, n)| n)
}

/// One case's samples: freeze and floor latency, their writer stall beyond the lock window.
#[derive(Default)]
struct Case {
    freeze: Samples,
    floor: Samples,
    freeze_overhead: Samples,
    floor_overhead: Samples,
    open_before: Samples,
}

/// The figure on a fresh server of the bench's flavour with `innodb` InnoDB tables.
pub(crate) fn many_tables(b: &mut Bench, innodb: usize) -> Outcome {
    let args: Vec<String> = [
        "--table-open-cache=20000",
        "--table-definition-cache=21000",
        "--innodb-open-files=21000",
        "--open-files-limit=65000",
    ]
    .map(String::from)
    .to_vec();
    let server = b.flavour.start(&args)?;
    let target = server.as_ref();
    let mut conn = target.conn();
    let tables = tables(innodb);
    let created = Instant::now();
    let mut create = vec!["CREATE DATABASE IF NOT EXISTS many".to_string()];
    create.extend(tables.iter().map(|(name, engine)| {
        format!("CREATE TABLE {name} (id INT AUTO_INCREMENT PRIMARY KEY, v INT) ENGINE={engine}")
    }));
    run_chunked(&mut conn, &create)?;
    eprintln!(
        "  created {} tables in {:.0} s",
        tables.len(),
        created.elapsed().as_secs_f64()
    );
    let load = WriteLoad::start(target, WRITERS, "snap.inno");
    std::thread::sleep(Duration::from_millis(500));
    let mut cases: Vec<(Mode, bool)> = vec![(Mode::Ftwrl, true), (Mode::Ftwrl, false)];
    if b.flavour.modes().contains(&Mode::BackupStage) {
        // BACKUP STAGE flushes no tables: the pre-flush does not apply to it.
        cases.push((Mode::BackupStage, false));
    }
    let label = format!("{} InnoDB + {MYISAM} MyISAM tables open", innodb);
    let mut details = Vec::new();
    for (mode, pre_flush) in cases {
        let settings = if pre_flush { "" } else { "pre-flush = off" };
        let product = Product::new(&b.bin_dir, target, settings);
        let mut case = Case::default();
        let warmup = b.warmup.min(1);
        for i in 0..warmup + b.runs.min(RUNS) {
            let (measured, floor_first) = (i >= warmup, i % 2 == 0);
            for floor_turn in [floor_first, !floor_first] {
                open_all(&mut conn, &tables)?;
                let open = open_tables(&mut conn);
                let who = match floor_turn {
                    true => Snapshotter::Floor {
                        pre_flush: pre_flush && mode == Mode::Ftwrl,
                    },
                    false => Snapshotter::Product(&product),
                };
                let s = snapshot_beside(b, target, &load, mode, who)?;
                if !measured {
                    continue;
                }
                let overhead = ms(s.stall) - ms(s.window);
                if floor_turn {
                    case.floor.push_ms(s.latency);
                    case.floor_overhead.push(overhead);
                } else {
                    case.freeze.push_ms(s.latency);
                    case.freeze_overhead.push(overhead);
                    case.open_before.push(open as f64);
                }
            }
        }
        let name = match (mode, pre_flush) {
            (Mode::Ftwrl, true) => "ftwrl, pre-flush on (default)".to_string(),
            (Mode::Ftwrl, false) => "ftwrl, pre-flush off".to_string(),
            (other, _) => other.name().to_string(),
        };
        let ratio = case.freeze.median() / case.floor.median();
        details.push(json!({
            "case": name,
            "open_tables_before": case.open_before.to_json(),
        }));
        b.row(
            Row::new(
                "many tables: freeze latency",
                &format!("{label}, {name}"),
                "ms",
                case.freeze,
            )
            .floor(case.floor)
            .target(&format!("≤ 2 × floor (is {ratio:.2} ×)"), ratio <= 2.0),
        );
        b.row(
            Row::new(
                "many tables: writer stall overhead (longest stall − window)",
                &format!("{label}, {name}, {WRITERS} writers"),
                "ms",
                case.freeze_overhead,
            )
            .floor(case.floor_overhead),
        );
    }
    b.report.detail(
        &format!("{}: many tables", b.flavour.name()),
        json!(details),
    );
    drop(load);
    drop(conn);
    drop(server);
    Ok(())
}
