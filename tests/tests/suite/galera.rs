//! Galera: freeze on a node of a real 2-node cluster (MariaDB 10.11 + galera-4 on loopback) holds
//! the lock on that node only — the other node's writers go on — records the node's exact seqno
//! (`wsrep_last_committed` read while commits are blocked) and the `grastate.dat` a restored
//! node rejoins with, and refuses a node that is not `Synced` before taking any lock.

use std::time::{Duration, Instant};

use harness::galera::{Cluster, InsertLoad, Node};
use harness::{text, wait_until, Sandbox};
use mysql::prelude::Queryable;

/// How long the lock is held on node 2 while node 1 writes.
const HOLD: Duration = Duration::from_secs(5);

/// The info file the last freeze wrote, parsed.
fn info(sandbox: &Sandbox) -> serde_json::Value {
    let text = std::fs::read_to_string(&sandbox.info_file)
        .unwrap_or_else(|e| panic!("read {}: {e}", sandbox.info_file.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("info file is not JSON ({e}): {text}"))
}

fn rows(node: &Node) -> u64 {
    node.conn()
        .query_first("SELECT COUNT(*) FROM snap.inno")
        .unwrap()
        .unwrap()
}

/// The `--check` line for `name` (e.g. `ok   galera …`), if there is one.
fn check_line(stdout: &str, name: &str) -> Option<String> {
    stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .map(String::from)
}

fn check(sandbox: &Sandbox) -> String {
    let out = sandbox.command("freeze").arg("--check").output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_two_node_cluster_replicates_a_row_written_on_node_1_to_node_2_and_stops_cleanly() {
    let cluster = Cluster::start();
    let (n1, n2) = (&cluster.node1, &cluster.node2);
    assert!(n1.synced_in_two() && n2.synced_in_two());
    assert_eq!(n1.cluster_uuid(), n2.cluster_uuid());
    let name: Option<String> = n2.conn().query_first("SELECT @@wsrep_node_name").unwrap();
    assert_eq!(name.as_deref(), Some("node2"));
    // Node 2 got snap.inno from node 1 by SST; a row written on node 1 reaches it.
    n1.conn()
        .query_drop("INSERT INTO snap.inno (v) VALUES (4242)")
        .unwrap();
    let replicated = wait_until(Duration::from_secs(10), || {
        n2.conn()
            .query_first::<u64, _>("SELECT COUNT(*) FROM snap.inno WHERE v = 4242")
            .unwrap()
            == Some(1)
    });
    assert!(replicated, "node 2 never saw node 1's row");
    assert_eq!(n1.last_committed(), n2.last_committed());

    let pids = [n1.pid(), n2.pid()];
    let dirs = [n1.dir.path().to_path_buf(), n2.dir.path().to_path_buf()];
    drop(cluster);
    for pid in pids {
        assert!(
            !harness::alive(pid),
            "galera node PID {pid} survived the drop"
        );
    }
    for dir in dirs {
        assert!(!dir.exists(), "{} survived the drop", dir.display());
    }
}

#[test]
fn a_freeze_on_node_2_stalls_node_1_s_writers_at_most_500_ms_beyond_a_lock_free_window_and_records_the_exact_seqno(
) {
    let cluster = Cluster::start();
    let (n1, n2) = (&cluster.node1, &cluster.node2);
    let sandbox = Sandbox::new(n2, "");
    let load = InsertLoad::start(n1, 3);
    assert!(
        wait_until(Duration::from_secs(10), || load.count() >= 50),
        "node 1's write load does not write"
    );

    // The control: as long a window without any lock, to tell the lock's stall from the
    // machine's own hiccups (other tests share its two cores).
    let control_start = Instant::now();
    std::thread::sleep(HOLD + Duration::from_secs(1));
    let window_start = Instant::now();
    let out = sandbox.freeze();
    let froze = window_start.elapsed();
    assert!(out.status.success(), "freeze on node 2: {}", text(&out));
    // A commit on a locked Galera node waits for the release (see `Node::probe_write`).
    let probe = n2.probe_write();
    assert!(
        !probe.commits_within(Duration::from_secs(1)),
        "frozen, but a write on node 2 committed"
    );

    // While commits are blocked, node 2's seqno is exact: the info file must hold it.
    let seqno = n2.last_committed();
    let uuid = n2.cluster_uuid();
    let info = info(&sandbox);
    let galera = &info["galera"];
    assert_eq!(galera["last_committed"].as_i64(), Some(seqno), "{info}");
    assert_eq!(
        galera["cluster_uuid"].as_str(),
        Some(uuid.as_str()),
        "{info}"
    );
    assert_eq!(galera["node_name"].as_str(), Some("node2"), "{info}");
    assert_eq!(
        galera["local_state_comment"].as_str(),
        Some("Synced"),
        "{info}"
    );
    assert_eq!(galera["cluster_size"].as_u64(), Some(2), "{info}");
    assert!(galera["local_cached_downto"].is_i64(), "{info}");
    assert_eq!(
        galera["grastate"].as_str(),
        Some(
            format!(
                "# GALERA saved state\nversion: 2.1\nuuid:    {uuid}\nseqno:   {seqno}\nsafe_to_bootstrap: 0\n"
            )
            .as_str()
        ),
        "{info}"
    );

    // The hold: node 2 commits nothing, node 1 keeps committing.
    let node1_before = n1.last_committed();
    let hold_start = Instant::now();
    while hold_start.elapsed() < HOLD {
        assert_eq!(n2.last_committed(), seqno, "node 2 committed while locked");
        std::thread::sleep(Duration::from_millis(200));
    }
    let node1_after = n1.last_committed();
    assert!(
        node1_after > node1_before + 10,
        "node 1 stalled during the hold: seqno {node1_before} → {node1_after}"
    );

    let thaw_began = window_start.elapsed();
    let out = sandbox.thaw("thaw");
    let thawed = Instant::now();
    assert!(out.status.success(), "thaw on node 2: {}", text(&out));
    probe
        .finish(Duration::from_secs(10))
        .expect("the write that waited on node 2 commits after the thaw");
    let resynced = wait_until(Duration::from_secs(5), || n2.state_comment() == "Synced");
    let resync = thawed.elapsed();
    let report = load.stop();
    let slowest = report.slowest_between(window_start, thawed);
    let longest = slowest.map_or(Duration::ZERO, |i| i.took);
    let control = report
        .slowest_between(control_start, window_start)
        .map_or(Duration::ZERO, |i| i.took);
    // When it began, from the freeze's start (negative: it was already running).
    let began = slowest.map_or(0.0, |i| {
        i.started
            .saturating_duration_since(window_start)
            .as_secs_f64()
            - window_start
                .saturating_duration_since(i.started)
                .as_secs_f64()
    });
    eprintln!(
        "galera: freeze on node 2 took {:.0} ms, thaw began at {:.2} s and ended at {:.2} s; \
         node 1's longest insert from freeze to thaw {:.1} ms ({:.1} ms in the control window before; began at {began:+.2} s; {} inserts in all, \
         node 1 seqno +{} during the {HOLD:?} hold, node 2 held at seqno {seqno}); \
         node 2 Synced again {:.2} s after the thaw",
        froze.as_secs_f64() * 1000.0,
        thaw_began.as_secs_f64(),
        thawed.duration_since(window_start).as_secs_f64(),
        longest.as_secs_f64() * 1000.0,
        control.as_secs_f64() * 1000.0,
        report.inserts.len(),
        node1_after - node1_before,
        resync.as_secs_f64()
    );
    assert!(
        report.errors.is_empty(),
        "node 1's writers failed: {:?}",
        report.errors
    );
    assert!(
        longest <= Duration::from_millis(500) + control,
        "node 1's writers stalled {longest:?} while node 2 was frozen ({control:?} in the control window)"
    );
    assert!(
        resynced,
        "node 2 is still {:?} 5 s after the thaw",
        n2.state_comment()
    );

    // The write-sets queued during the hold reach node 2.
    let total = rows(n1);
    assert!(
        wait_until(Duration::from_secs(30), || rows(n2) == total),
        "node 2 has {} rows, node 1 {total}",
        rows(n2)
    );
    n2.assert_nothing_left(&sandbox, Duration::from_secs(10));
}

#[test]
fn a_node_that_is_not_synced_is_refused_before_any_lock_and_check_says_so() {
    let cluster = Cluster::start();
    let n2 = &cluster.node2;
    let sandbox = Sandbox::new(n2, "");

    n2.conn()
        .query_drop("SET GLOBAL wsrep_desync = ON")
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || n2.state_comment() != "Synced"),
        "node 2 stays Synced with wsrep_desync = ON"
    );
    let state = n2.state_comment();

    let out = sandbox.freeze();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "freeze on a {state} node: {}",
        text(&out)
    );
    assert!(stderr.contains("event=refused"), "{}", text(&out));
    assert!(stderr.contains("not Synced"), "{}", text(&out));
    assert!(
        stderr.contains(&state),
        "the refusal must name {state}: {}",
        text(&out)
    );
    assert!(
        sandbox.lockers().is_empty(),
        "a locker was started: {:?}",
        sandbox.lockers()
    );
    assert!(
        n2.probe_write().commits_within(Duration::from_secs(5)),
        "a refused freeze left writes blocked"
    );
    // No lock, so no held record: the info file says the freeze was refused, and why.
    sandbox.assert_copy_says("refused", "not Synced");

    let stdout = check(&sandbox);
    let line = check_line(&stdout, "galera");
    assert!(
        line.as_deref()
            .is_some_and(|l| l.starts_with("FAIL galera")),
        "--check on a {state} node: {stdout}"
    );
    assert!(
        n2.probe_write().commits_within(Duration::from_secs(5)),
        "--check left writes blocked"
    );

    n2.conn()
        .query_drop("SET GLOBAL wsrep_desync = OFF")
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || n2.state_comment() == "Synced"),
        "node 2 is still {:?} after wsrep_desync = OFF",
        n2.state_comment()
    );
    let stdout = check(&sandbox);
    let line = check_line(&stdout, "galera");
    assert!(
        line.as_deref()
            .is_some_and(|l| l.starts_with("ok   galera")),
        "--check on a Synced node: {stdout}"
    );

    let out = sandbox.freeze();
    assert!(
        out.status.success(),
        "freeze once Synced again: {}",
        text(&out)
    );
    let probe = n2.probe_write();
    assert!(
        !probe.commits_within(Duration::from_secs(1)),
        "frozen, but a write on node 2 committed"
    );
    let out = sandbox.thaw("thaw");
    assert!(out.status.success(), "thaw: {}", text(&out));
    probe
        .finish(Duration::from_secs(10))
        .expect("the write that waited on node 2 commits after the thaw");
    n2.assert_nothing_left(&sandbox, Duration::from_secs(10));
}

/// A copy of a Galera node's datadir made while freeze holds the lock verifies consistent, and
/// its `grastate.dat` names the cluster the info file records; the same copy with another
/// cluster's `grastate.dat` is never called consistent.
#[test]
fn a_copy_of_a_galera_node_made_under_the_lock_verifies_consistent_and_its_grastate_names_the_cluster(
) {
    let cluster = Cluster::start();
    // Node 1: its datadir is owned alike throughout, as a real one is (node 2's directory belongs
    // to rsync's account, its files to the server's).
    let node = &cluster.node1;
    let sandbox = Sandbox::new(node, "");
    let out = sandbox.freeze();
    assert!(out.status.success(), "freeze on node 1: {}", text(&out));
    let uuid = node.cluster_uuid();
    let work = harness::TempDir::new("galera-copy");
    // The copy's server runs as the datadir's owner, who must reach it.
    std::fs::set_permissions(
        work.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let copy = work.path().join("data");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(node.dir.path().join("data"))
        .arg(&copy)
        .output()
        .unwrap();
    assert!(copied.status.success(), "{}", text(&copied));
    std::fs::copy(&sandbox.info_file, copy.join("snapshot-info.json")).unwrap();
    assert_eq!(info(&sandbox)["galera"]["cluster_uuid"], uuid.as_str());
    let out = sandbox.thaw("thaw");
    assert!(out.status.success(), "{}", text(&out));
    let scratch = crate::verify::work_dir();
    let scratch = scratch.path();

    let verdict = crate::verify::verify_with(sandbox.command("verify"), &copy, scratch);
    let said = verdict.report.to_string();
    assert_eq!(verdict.code, Some(0), "{}", verdict.output);
    assert!(
        said.contains(&format!("grastate.dat names the recorded cluster {uuid}")),
        "{said}"
    );

    let grastate = copy.join("grastate.dat");
    let other = std::fs::read_to_string(&grastate)
        .unwrap()
        .replace(&uuid, "00000000-0000-0000-0000-000000000001");
    std::fs::write(&grastate, other).unwrap();
    let verdict = crate::verify::verify_with(sandbox.command("verify"), &copy, scratch);
    let (code, said) = (verdict.code, verdict.report.to_string());
    assert_ne!(
        code,
        Some(0),
        "another cluster's grastate.dat was called consistent: {said}"
    );
    assert!(
        said.contains("grastate.dat names cluster 00000000-0000-0000-0000-000000000001"),
        "{said}"
    );
    eprintln!(
        "verified a node copy: consistent, then with another cluster's grastate.dat exit {code:?}"
    );
}
