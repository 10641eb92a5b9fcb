//! Coordinates a replica can be seeded from: freeze on a replica records the coordinates its SQL
//! thread had executed (and its GTID position) exactly as the replica reports them while locked,
//! and `clone_replica_sql` from the info file turns a copy of the replica's disk, taken while
//! frozen, into a sibling replica that catches up with the source without errors.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use harness::loopfs::{self, LoopMount};
use harness::{text, wait_until, Sandbox, Server, TempDir};
use mysql::prelude::Queryable;

use harness::replication::{Source, REPL_PASSWORD};

fn count(server: &Server) -> u64 {
    server
        .conn()
        .query_first("SELECT COUNT(*) FROM snap.feed")
        .ok()
        .flatten()
        .unwrap_or(0)
}

fn slave_status(server: &Server) -> mysql::Row {
    server
        .conn()
        .query_first("SHOW ALL SLAVES STATUS")
        .unwrap()
        .expect("a replication connection")
}

#[test]
fn a_replica_snapshot_records_executed_coordinates_and_clones_a_sibling_that_catches_up() {
    if loopfs::machine_cannot_loop_mount("a_replica_snapshot_records_executed_coordinates…") {
        return;
    }
    // The source listens on loopback only: replication needs a TCP port.
    let upstream = Source::start(&[]);
    let (source, port) = (&upstream.server, upstream.port);

    // The replica's datadir lives on a loop mount, so that its disk can be copied while frozen.
    let dir = TempDir::new("replica");
    let mount = LoopMount::create(
        &dir.path().join("replica.img"),
        &dir.path().join("mnt"),
        512,
    );
    let data = mount.mountpoint.join("data");
    loopfs::install_datadir(&data);
    let replica_args = [
        "--log-bin=binlog",
        "--server-id=2",
        "--log-slave-updates",
        "--relay-log=relay",
    ];
    let replica = Server::start_on(&data, &replica_args);
    upstream.attach(&replica);

    // A steady write load on the source.
    let stop = Arc::new(AtomicBool::new(false));
    let loader = {
        let mut conn = source.conn();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                conn.exec_drop("INSERT INTO snap.feed (v) VALUES (?)", (n,))
                    .unwrap();
                n += 1;
            }
        })
    };
    assert!(
        wait_until(Duration::from_secs(60), || count(&replica) > 200),
        "the replica does not replicate: {:?}",
        slave_status(&replica)
    );

    let sandbox = Sandbox::new(&replica, "");
    let out = sandbox.freeze();
    assert!(out.status.success(), "{}", text(&out));
    let status = slave_status(&replica);
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&sandbox.info_file).unwrap()).unwrap();
    let recorded = &info["replicas"][0];
    // A replica's durability record says what a clone of it would miss: its SQL thread's open
    // temporary tables, read while the lock held it (none here: the load is row-based inserts).
    assert_eq!(info["durability"]["replica"], true, "{info}");
    assert_eq!(info["durability"]["replica_open_temp_tables"], 0, "{info}");
    assert_eq!(
        recorded["executed"]["file"].as_str(),
        status.get::<String, _>("Relay_Master_Log_File").as_deref(),
        "executed file: {info}"
    );
    assert_eq!(
        recorded["executed"]["position"].as_u64(),
        status.get::<u64, _>("Exec_Master_Log_Pos"),
        "executed position (not the IO thread's Read_Master_Log_Pos): {info}"
    );
    assert_eq!(
        recorded["gtid_position"].as_str(),
        status.get::<String, _>("Gtid_Slave_Pos").as_deref(),
        "GTID position: {info}"
    );
    assert_eq!(recorded["source_port"].as_u64(), Some(u64::from(port)));

    // The hypervisor's part: freeze the filesystem, copy the disk block for block, thaw.
    let copy = dir.path().join("clone.img");
    {
        let _window = mount.freeze_window();
        let frozen = Command::new("fsfreeze")
            .arg("-f")
            .arg(&mount.mountpoint)
            .status()
            .unwrap();
        assert!(frozen.success());
        let copied = Command::new("cp")
            .arg("--sparse=always")
            .arg(&mount.image)
            .arg(&copy)
            .status()
            .unwrap();
        assert!(copied.success());
    }
    let out = sandbox.thaw("thaw");
    assert!(out.status.success(), "{}", text(&out));

    // A sibling replica from the copy, set up with clone_replica_sql.
    let clone_mount = LoopMount::attach(&copy, &dir.path().join("mnt2"));
    let clone = Server::start_on(
        &clone_mount.mountpoint.join("data"),
        &[
            "--log-bin=binlog",
            "--server-id=3",
            "--log-slave-updates",
            "--relay-log=relay",
            "--skip-slave-start",
        ],
    );
    let statements: Vec<String> = info["clone_replica_sql"]
        .as_array()
        .expect("clone_replica_sql for a replica")
        .iter()
        .map(|s| s.as_str().unwrap().replace("<password>", REPL_PASSWORD))
        .collect();
    let mut conn = clone.conn();
    for statement in &statements {
        conn.query_drop(statement)
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }

    stop.store(true, Ordering::SeqCst);
    loader.join().unwrap();
    let total = count(source);
    let caught_up = wait_until(Duration::from_secs(120), || count(&clone) == total);
    let status = slave_status(&clone);
    assert!(
        caught_up,
        "the clone has {} of {total} rows: {status:?}",
        count(&clone)
    );
    assert_eq!(
        status.get::<u64, _>("Last_SQL_Errno"),
        Some(0),
        "{status:?}"
    );
    assert_eq!(status.get::<u64, _>("Last_IO_Errno"), Some(0), "{status:?}");
    let source_ids: u64 = source
        .conn()
        .query_first("SELECT SUM(id) FROM snap.feed")
        .unwrap()
        .unwrap();
    let clone_ids: u64 = clone
        .conn()
        .query_first("SELECT SUM(id) FROM snap.feed")
        .unwrap()
        .unwrap();
    assert_eq!(
        source_ids, clone_ids,
        "the clone's rows differ from the source's"
    );
    drop(clone);
    drop(replica);
}
