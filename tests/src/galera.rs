//! A real 2-node MariaDB Galera cluster on loopback (CONTRACTS.md §2 "Clusters"): node 1 starts a
//! new cluster from the harness's template datadir, node 2 joins it by rsync SST into an empty
//! datadir owned by `nobody` (rsync's SST daemon runs as `nobody` under root).
//!
//! Both nodes are private: their own temp dirs, sockets and free loopback ports, `--no-defaults`.
//! Each node is a real `Server`, so a `Sandbox` points at it as at any other test server. A node
//! is stopped by its PID only (SIGTERM, then SIGKILL), then the SST helpers it left in its own
//! process group; the machine's own server and any other process are never touched.
use std::ops::Deref;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;

use crate::loopfs::{install_datadir, tail};
use crate::{alive, tool, wait_until, Server, TempDir, SERVER_TUNING};

/// The Galera provider Debian's `galera-4` package installs.
pub const PROVIDER: &str = "/usr/lib/galera/libgalera_smm.so";

/// How long the whole cluster may take to come up (both nodes Synced, cluster size 2).
const START_LIMIT: Duration = Duration::from_secs(120);

/// How long a node may take to stop on SIGTERM before it is killed.
const STOP_LIMIT: Duration = Duration::from_secs(30);

/// The four loopback ports a node listens on.
#[derive(Debug, Clone, Copy)]
struct Ports {
    client: u16,
    gmcast: u16,
    ist: u16,
    sst: u16,
}

/// `n` distinct free loopback ports: all are bound at once (port 0), then released.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// One node of the cluster: a private server (derefs to `Server`) with its name.
pub struct Node {
    /// `node1` or `node2` (its `wsrep_node_name`).
    pub name: &'static str,
    server: Server,
}

impl Deref for Node {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

impl Node {
    /// Starts a node's mariadbd on `data` (in `dir`) with the cluster's settings plus `extra`.
    /// Returns at once; the caller waits for it.
    fn spawn(
        name: &'static str,
        id: u32,
        dir: TempDir,
        ports: Ports,
        cluster_address: &str,
        extra: &[&str],
    ) -> Node {
        let socket = dir.path().join("mysqld.sock");
        let tmpdir = dir.path().join("tmp");
        std::fs::create_dir_all(&tmpdir).unwrap();
        let child = Command::new(tool("mariadbd"))
            .args(["--no-defaults", "--user=root", "--bind-address=127.0.0.1"])
            .arg(format!("--port={}", ports.client))
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--tmpdir={}", tmpdir.display()))
            .arg(format!(
                "--pid-file={}",
                dir.path().join("mysqld.pid").display()
            ))
            .arg(format!(
                "--log-error={}",
                dir.path().join("error.log").display()
            ))
            .args(SERVER_TUNING)
            .args([
                "--log-bin=binlog",
                &format!("--server-id={id}"),
                "--log-slave-updates",
                "--binlog-format=ROW",
                "--innodb-autoinc-lock-mode=2",
                "--wsrep-on=ON",
                &format!("--wsrep-provider={PROVIDER}"),
                &format!("--wsrep-cluster-address={cluster_address}"),
                &format!(
                    "--wsrep-provider-options=gmcast.listen_addr=tcp://127.0.0.1:{};ist.recv_addr=127.0.0.1:{};gcache.size=32M",
                    ports.gmcast, ports.ist
                ),
                &format!("--wsrep-node-address=127.0.0.1:{}", ports.gmcast),
                &format!("--wsrep-node-name={name}"),
                "--wsrep-sst-method=rsync",
                &format!("--wsrep-sst-receive-address=127.0.0.1:{}", ports.sst),
            ])
            .args(extra)
            // A process group of its own: the SST scripts and rsync daemons it starts can be
            // stopped by that group's id when the node goes.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mariadbd");
        Node {
            name,
            server: Server {
                dir,
                socket,
                child: Some(child),
            },
        }
    }

    /// The mariadbd's PID.
    pub fn pid(&self) -> u32 {
        self.server
            .child
            .as_ref()
            .map(std::process::Child::id)
            .expect("the node is running")
    }

    /// True once the mariadbd has exited (a zombie counts as exited).
    fn exited(&self) -> bool {
        !alive(self.pid())
    }

    /// A global status variable, or `None` if the node cannot be asked right now.
    pub fn status(&self, name: &str) -> Option<String> {
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "not a status variable name: {name}"
        );
        let mut conn = self.try_conn()?;
        // SHOW takes no placeholders: the name is checked above.
        let row: Option<(String, String)> = conn
            .query_first(format!("SHOW GLOBAL STATUS LIKE '{name}'"))
            .ok()?;
        row.map(|(_, value)| value)
    }

    /// `wsrep_local_state_comment` (`Synced`, `Donor/Desynced`, `Joined`, …); empty if unknown.
    pub fn state_comment(&self) -> String {
        self.status("wsrep_local_state_comment").unwrap_or_default()
    }

    /// `wsrep_last_committed`: the seqno of the last write-set this node committed.
    pub fn last_committed(&self) -> i64 {
        self.status("wsrep_last_committed")
            .and_then(|v| v.parse().ok())
            .expect("wsrep_last_committed")
    }

    /// `wsrep_cluster_state_uuid`: the cluster's history UUID.
    pub fn cluster_uuid(&self) -> String {
        self.status("wsrep_cluster_state_uuid")
            .expect("wsrep_cluster_state_uuid")
    }

    /// True when this node is `Synced` in a primary component of 2 nodes.
    pub fn synced_in_two(&self) -> bool {
        self.state_comment() == "Synced"
            && self.status("wsrep_cluster_size").as_deref() == Some("2")
    }

    /// Starts one autocommit insert into `snap.inno` on this node, in a thread of its own.
    ///
    /// `Server::writes_blocked` cannot tell a locked Galera node: there a commit behind
    /// `BACKUP STAGE BLOCK_COMMIT` or FTWRL waits (state `Commit`) for the release whatever
    /// `lock_wait_timeout` and `max_statement_time` say, instead of failing with 1205. So a
    /// locked node is told by a write that has not committed after a while and commits once the
    /// lock is released.
    pub fn probe_write(&self) -> ProbeWrite {
        let mut conn = self.conn();
        let committed = Arc::new(AtomicBool::new(false));
        let flag = committed.clone();
        let thread = thread::spawn(move || {
            let result = conn
                .query_drop("INSERT INTO snap.inno (v) VALUES (-1)")
                .map_err(|e| e.to_string());
            flag.store(result.is_ok(), Ordering::SeqCst);
            result
        });
        ProbeWrite { committed, thread }
    }

    /// `crate::assert_nothing_left` for a Galera node: first a `probe_write` must commit within
    /// `limit` (the generic probe would wait for a lock left behind instead of failing fast),
    /// then the generic checks (no locker of `sandbox`, writes go through).
    pub fn assert_nothing_left(&self, sandbox: &crate::Sandbox, limit: Duration) {
        let probe = self.probe_write();
        assert!(
            probe.commits_within(limit),
            "a write on {} still waits after {limit:?}: a lock is left behind (lockers {:?})",
            self.name,
            sandbox.lockers()
        );
        crate::assert_nothing_left(self, sandbox, limit);
    }

    /// The last 4 KiB of the node's error log, for assertion messages.
    pub fn log_tail(&self) -> String {
        tail(&self.dir.path().join("error.log"), 4000)
    }

    /// Stops the node: SIGTERM to its PID, SIGKILL if it has not gone within `STOP_LIMIT`, then
    /// SIGKILL to whatever is left in its own process group (SST helpers), and reaps it.
    fn stop(&mut self) {
        let Some(mut child) = self.server.child.take() else {
            return;
        };
        let pid = child.id();
        if alive(pid) {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            if !wait_until(STOP_LIMIT, || !alive(pid)) {
                eprintln!(
                    "!!! galera {} (PID {pid}) ignored SIGTERM; killing it",
                    self.name
                );
                let _ = child.kill();
            }
        }
        // Not reaped yet, so the group id cannot belong to anyone else: stop its helpers.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One insert started by `Node::probe_write`.
pub struct ProbeWrite {
    committed: Arc<AtomicBool>,
    thread: JoinHandle<Result<(), String>>,
}

impl ProbeWrite {
    /// True if the insert has committed within `limit` (false means it is still waiting).
    pub fn commits_within(&self, limit: Duration) -> bool {
        wait_until(limit, || self.committed.load(Ordering::SeqCst))
    }

    /// Waits up to `limit` for the insert to end; its error, or a timeout, is an `Err`.
    pub fn finish(self, limit: Duration) -> Result<(), String> {
        if !wait_until(limit, || self.thread.is_finished()) {
            return Err(format!("the probe write is still waiting after {limit:?}"));
        }
        self.thread.join().expect("the probe write thread panicked")
    }
}

/// Two Galera nodes on loopback, both `Synced` in one cluster, with `snap.inno` (InnoDB: Galera
/// replicates InnoDB only). Dropping it stops node 2, then node 1, then removes their dirs.
pub struct Cluster {
    // Fields drop in this order: the joiner first, then the node that started the cluster.
    pub node2: Node,
    pub node1: Node,
}

impl Cluster {
    /// Starts node 1 with `--wsrep-new-cluster`, creates the schema, starts node 2 joining it by
    /// rsync SST, and waits until both are `Synced` in a cluster of 2. Panics (with both error
    /// logs' tails) if that takes longer than `START_LIMIT`.
    pub fn start() -> Cluster {
        crate::heavy(); // two nodes and an SST run alone (see `gate`)
        assert!(
            Path::new(PROVIDER).is_file(),
            "{PROVIDER} is missing: install galera-4 (tests/run.sh does)"
        );
        let started = Instant::now();
        let ports = free_ports(8);
        let [p1, p2] = [0, 1].map(|i| Ports {
            client: ports[4 * i],
            gmcast: ports[4 * i + 1],
            ist: ports[4 * i + 2],
            sst: ports[4 * i + 3],
        });
        let address = format!("gcomm://127.0.0.1:{},127.0.0.1:{}", p1.gmcast, p2.gmcast);

        let dir1 = TempDir::new("galera1");
        install_datadir(&dir1.path().join("data"));
        let node1 = Node::spawn("node1", 1, dir1, p1, &address, &["--wsrep-new-cluster"]);
        let up = wait_until(START_LIMIT, || {
            node1.exited() || node1.state_comment() == "Synced" || pause()
        });
        assert!(
            up && !node1.exited(),
            "galera node1 did not start a cluster within {START_LIMIT:?}:\n{}",
            node1.log_tail()
        );
        node1
            .conn()
            .query_drop(
                "CREATE DATABASE snap;
                 CREATE TABLE snap.inno (id INT AUTO_INCREMENT PRIMARY KEY, v INT) ENGINE=InnoDB;",
            )
            .unwrap();

        // The joiner's datadir: empty, and writable by rsync's daemon, which runs as `nobody`.
        let dir2 = TempDir::new("galera2");
        std::fs::set_permissions(
            dir2.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o711),
        )
        .unwrap();
        let data2 = dir2.path().join("data");
        std::fs::create_dir(&data2).unwrap();
        let chown = Command::new(tool("chown"))
            .arg("nobody")
            .arg(&data2)
            .output()
            .unwrap();
        assert!(chown.status.success(), "{}", crate::text(&chown));
        let node2 = Node::spawn("node2", 2, dir2, p2, &address, &[]);
        let cluster = Cluster { node2, node1 };
        let left = START_LIMIT.saturating_sub(started.elapsed());
        let synced = wait_until(left, || {
            cluster.node1.exited()
                || cluster.node2.exited()
                || (cluster.node2.synced_in_two() && cluster.node1.synced_in_two())
                || pause()
        });
        assert!(
            synced && !cluster.node1.exited() && !cluster.node2.exited(),
            "the galera cluster did not reach 2 Synced nodes within {START_LIMIT:?} \
             (node1 {:?}, node2 {:?})\n--- node1 error log:\n{}\n--- node2 error log:\n{}",
            cluster.node1.state_comment(),
            cluster.node2.state_comment(),
            cluster.node1.log_tail(),
            cluster.node2.log_tail()
        );
        eprintln!(
            "galera cluster of 2 Synced nodes in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        cluster
    }
}

/// Paces a polling condition that connects to a server (false, after 50 ms).
fn pause() -> bool {
    thread::sleep(Duration::from_millis(50));
    false
}

/// One insert of an `InsertLoad`: when it started and how long it took.
#[derive(Debug, Clone, Copy)]
pub struct Insert {
    pub started: Instant,
    pub took: Duration,
}

/// What an `InsertLoad` saw.
#[derive(Debug)]
pub struct InsertReport {
    pub inserts: Vec<Insert>,
    pub errors: Vec<String>,
}

impl InsertReport {
    /// The slowest insert whose run overlapped `[from, to]`, if any did.
    pub fn slowest_between(&self, from: Instant, to: Instant) -> Option<Insert> {
        self.inserts
            .iter()
            .filter(|i| i.started <= to && i.started + i.took >= from)
            .max_by_key(|i| i.took)
            .copied()
    }
}

/// A background write load: `threads` connections inserting into `snap.inno` in autocommit,
/// each insert timed. `stop` ends it and returns every insert.
pub struct InsertLoad {
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
    threads: Vec<JoinHandle<(Vec<Insert>, Vec<String>)>>,
}

impl InsertLoad {
    pub fn start(node: &Node, threads: usize) -> InsertLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let threads = (0..threads)
            .map(|t| {
                let mut conn = node.conn();
                let (stop, count) = (stop.clone(), count.clone());
                thread::spawn(move || {
                    let (mut inserts, mut errors) = (Vec::new(), Vec::new());
                    let mut n = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        n += 1;
                        let started = Instant::now();
                        match conn.query_drop(format!("INSERT INTO snap.inno (v) VALUES ({t}{n})"))
                        {
                            Ok(()) => {
                                inserts.push(Insert {
                                    started,
                                    took: started.elapsed(),
                                });
                                count.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(e) => {
                                errors.push(e.to_string());
                                if errors.len() > 20 {
                                    break;
                                }
                            }
                        }
                        // A little room for the two shared cores.
                        thread::sleep(Duration::from_millis(2));
                    }
                    (inserts, errors)
                })
            })
            .collect();
        InsertLoad {
            stop,
            count,
            threads,
        }
    }

    /// Inserts committed so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// Stops the writers and returns what they saw.
    pub fn stop(mut self) -> InsertReport {
        self.stop.store(true, Ordering::SeqCst);
        let mut report = InsertReport {
            inserts: Vec::new(),
            errors: Vec::new(),
        };
        for thread in self.threads.drain(..) {
            let (inserts, errors) = thread.join().expect("a writer thread panicked");
            report.inserts.extend(inserts);
            report.errors.extend(errors);
        }
        report
    }
}

impl Drop for InsertLoad {
    fn drop(&mut self) {
        // No join here: a writer may be blocked; it ends when the node stops.
        self.stop.store(true, Ordering::SeqCst);
    }
}
