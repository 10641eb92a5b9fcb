//! The server that boots the copy: which binary (the one whose release matches the copy's), and
//! one private run of it on the writable layer — no network, a socket, server id and tmpdir of its
//! own, no option file read, replication and events never started, the grant tables skipped, as
//! an unprivileged account — stopped by its PID when dropped.
//!
//! It never starts a server on the copy itself, never reads the machine's option files, and never
//! connects to any server but the one it started. A SIGTERM, SIGINT or SIGHUP kills that server at
//! once, so that verify goes on to unmount its layer and exit instead of dying with both left.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::server::{self, Client, Flavor, ServerInfo, Session};
use common::{Error, Result};

use crate::layer::{Account, Layer};

/// The server id the booted copy runs with (another when the copy's own is this one).
const OWN_SERVER_ID: u64 = 4_294_967_290;

/// The PID of the server running now (0: none), for the signal thread.
static SERVER_PID: AtomicU32 = AtomicU32::new(0);
/// The signal that stopped verify (0: none).
static STOPPED_BY: AtomicI32 = AtomicI32::new(0);

/// On SIGTERM, SIGINT or SIGHUP: remember it and kill the running server, whose connection then
/// fails, so that the layer is dropped (unmounted) on the ordinary way out.
pub(crate) fn stop_on_signals() -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| Error::io("install signal handlers for", "verify", e))?;
    std::thread::spawn(move || {
        for signal in signals.forever() {
            STOPPED_BY.store(signal, Ordering::SeqCst);
            let pid = SERVER_PID.load(Ordering::SeqCst);
            if pid != 0 {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    });
    Ok(())
}

/// The signal that stopped verify, by name.
pub(crate) fn stopped_by() -> Option<String> {
    match STOPPED_BY.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(
            signal_hook::low_level::signal_name(signal)
                .map_or_else(|| format!("signal {signal}"), str::to_string),
        ),
    }
}

/// A server binary and the version it reports.
pub(crate) struct Binary {
    pub(crate) path: PathBuf,
    pub(crate) info: ServerInfo,
}

impl Binary {
    /// `path --version` parsed (`mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 for …`).
    fn probe(path: &Path) -> Option<Binary> {
        let out = Command::new(path)
            .arg("--version")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let version = text.split_whitespace().skip_while(|w| *w != "Ver").nth(1)?;
        let info = ServerInfo::new(version.to_string(), 0);
        // A MySQL version string does not name the flavour; the banner does.
        let info = match text.contains("MariaDB") {
            true => ServerInfo {
                flavor: Flavor::MariaDb,
                ..info
            },
            false => info,
        };
        Some(Binary {
            path: path.to_path_buf(),
            info,
        })
    }
}

/// The server binary to boot a copy written by `copy_version`: `explicit`, else the first
/// `mariadbd` or `mysqld` on `PATH` (and the sbin directories) of the copy's flavour and release
/// (major.minor). A different flavour or release is refused unless `any_version`; the second
/// value is what the report says about the choice.
pub(crate) fn choose(
    explicit: Option<&Path>,
    copy_version: Option<&str>,
    any_version: bool,
) -> Result<(Binary, Option<String>)> {
    let candidates: Vec<Binary> = match explicit {
        Some(path) => vec![Binary::probe(path).ok_or_else(|| Error::Unverifiable {
            problem: format!(
                "{} --version does not say which server it is",
                path.display()
            ),
            fix: "Give a mariadbd or mysqld binary with --server".into(),
        })?],
        None => on_path(),
    };
    if candidates.is_empty() {
        return Err(Error::Unverifiable {
            problem: "no mariadbd or mysqld found on PATH or in /usr/sbin, /usr/local/sbin".into(),
            fix: "Install the server the copy was written by, or give it with --server".into(),
        });
    }
    let Some(version) = copy_version else {
        let binary = candidates.into_iter().next().ok_or_else(unknown)?;
        let note = format!(
            "the copy's server version is unknown (no info file, no mariadb_upgrade_info): booted with {} {}",
            binary.path.display(),
            binary.info.version
        );
        return Ok((binary, Some(note)));
    };
    let wanted = ServerInfo::new(version.to_string(), 0);
    let release = |b: &Binary| (b.info.number.0, b.info.number.1);
    let wanted_release = (wanted.number.0, wanted.number.1);
    let found: Vec<String> = candidates
        .iter()
        .map(|b| format!("{} {}", b.path.display(), b.info.version))
        .collect();
    let matching = candidates
        .iter()
        .position(|b| b.info.flavor == wanted.flavor && release(b) == wanted_release);
    match matching {
        Some(i) => {
            let binary = candidates.into_iter().nth(i).ok_or_else(unknown)?;
            let note = (binary.info.number != wanted.number).then(|| {
                format!(
                    "the copy was written by {version}; booted with {} {} (same release, another patch level)",
                    binary.path.display(),
                    binary.info.version
                )
            });
            Ok((binary, note))
        }
        None if any_version => {
            let binary = candidates.into_iter().next().ok_or_else(unknown)?;
            let note = format!(
                "the copy was written by {version} but is booted with {} {} (--any-version): a failure may be the version's, not the copy's",
                binary.path.display(),
                binary.info.version
            );
            Ok((binary, Some(note)))
        }
        None => Err(Error::Unverifiable {
            problem: format!(
                "the copy was written by {} {version}; the servers found are another flavour or release: {}",
                wanted.flavor.name(),
                found.join(", ")
            ),
            fix: format!(
                "Give a {} {}.{} server binary with --server PATH (or boot it anyway with --any-version)",
                wanted.flavor.name(),
                wanted_release.0,
                wanted_release.1
            ),
        }),
    }
}

fn unknown() -> Error {
    Error::Unverifiable {
        problem: "no server binary left to choose".into(),
        fix: "Give one with --server".into(),
    }
}

/// Every `mariadbd` and `mysqld` found, each real file once, in `PATH` order.
fn on_path() -> Vec<Binary> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/usr/local/mysql/bin"].map(PathBuf::from));
    let mut seen = Vec::new();
    let mut found = Vec::new();
    for dir in dirs {
        for name in ["mariadbd", "mysqld"] {
            let candidate = dir.join(name);
            let Ok(real) = std::fs::canonicalize(&candidate) else {
                continue;
            };
            if seen.contains(&real) {
                continue;
            }
            seen.push(real);
            if let Some(binary) = Binary::probe(&candidate) {
                found.push(binary);
            }
        }
    }
    found
}

/// What the booted server is told about the copy.
pub(crate) struct Plan<'a> {
    pub(crate) account: Option<&'a Account>,
    /// The copy's recorded server id (the booted server takes another).
    pub(crate) copy_server_id: Option<u64>,
    pub(crate) binlog: Option<&'a str>,
    pub(crate) relay_log: Option<&'a str>,
    /// `--server-option`s, passed last.
    pub(crate) extra: &'a [String],
    pub(crate) limit: Duration,
}

/// The socket's name in the layer's run directory, where verify connects from: a socket path is
/// limited to 107 bytes, which a deep work directory (or a chroot) would exceed.
const SOCKET: &str = "mysqld.sock";

/// The server running on the layer; killed by its PID when dropped (the layer is thrown away).
/// While it runs, verify's working directory is the layer's run directory (see [`SOCKET`]).
pub(crate) struct Booted {
    child: Child,
    /// The working directory to go back to.
    previous_dir: Option<PathBuf>,
    pub(crate) error_log: PathBuf,
    /// How long it took to accept connections (crash recovery included).
    pub(crate) took: Duration,
}

impl Booted {
    /// Starts `binary` on `layer` and waits (polling, within `plan.limit`) until it accepts a
    /// connection. `Err`: it exited or did not answer in time, with its error log's tail.
    pub(crate) fn start(
        binary: &Binary,
        layer: &Layer,
        plan: &Plan<'_>,
    ) -> std::result::Result<Booted, String> {
        if let Some(signal) = stopped_by() {
            return Err(format!("stopped by {signal} before the server started"));
        }
        let socket = layer.run.join(SOCKET);
        let error_log = layer.run.join("error.log");
        let server_id = match plan.copy_server_id {
            Some(id) if id == OWN_SERVER_ID => OWN_SERVER_ID + 1,
            _ => OWN_SERVER_ID,
        };
        let mut command = Command::new(&binary.path);
        command
            .arg("--no-defaults")
            .arg(format!("--datadir={}", layer.datadir.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!(
                "--pid-file={}",
                layer.run.join("mysqld.pid").display()
            ))
            .arg(format!("--log-error={}", error_log.display()))
            .arg(format!("--tmpdir={}", layer.run.join("tmp").display()))
            // Its own, existing directory: a packaged default (/var/lib/mysql-files) may be absent.
            .arg(format!(
                "--secure-file-priv={}",
                layer.run.join("tmp").display()
            ))
            .arg(format!("--server-id={server_id}"))
            .args([
                "--skip-networking",
                "--skip-grant-tables",
                "--event-scheduler=OFF",
                "--myisam-recover-options=OFF",
            ]);
        match binary.info.flavor {
            // The server refuses to start without InnoDB rather than start without it.
            Flavor::MariaDb => command.args(["--skip-slave-start", "--innodb=FORCE"]),
            Flavor::MySql => command.args(["--skip-replica-start", "--mysqlx=OFF"]),
        };
        if let Some(account) = plan.account {
            command.arg(format!("--user={}", account.name));
        }
        if let Some(binlog) = plan.binlog {
            // Into the layer: crash recovery needs the binary log it was written with.
            command.arg(format!(
                "--log-bin={}",
                layer.datadir.join(binlog).display()
            ));
        }
        if let Some(relay) = plan.relay_log {
            command.arg(format!(
                "--relay-log={}",
                layer.datadir.join(relay).display()
            ));
        }
        // What it says before its error log is open (a bad option) goes to a file of its own.
        let early = layer.run.join("server-output.log");
        let output = std::fs::File::create(&early)
            .map_err(|e| format!("cannot create {}: {e}", early.display()))?;
        let mut child = command
            .args(plan.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(output)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.path.display()))?;
        SERVER_PID.store(child.id(), Ordering::SeqCst);
        let previous_dir = std::env::current_dir().ok();
        if let Err(e) = std::env::set_current_dir(&layer.run) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("cannot enter {}: {e}", layer.run.display()));
        }
        let mut booted = Booted {
            child,
            previous_dir,
            error_log,
            took: Duration::ZERO,
        };
        let started = Instant::now();
        loop {
            if let Some(signal) = stopped_by() {
                return Err(format!("stopped by {signal} while the server started"));
            }
            if let Ok(Some(status)) = booted.child.try_wait() {
                return Err(format!(
                    "the server exited ({status}) during startup; its error log ends:\n{}{}",
                    tail(&booted.error_log),
                    tail(&early)
                ));
            }
            let refused = match server::open(&client(), Duration::from_secs(5)) {
                Ok(_) => {
                    booted.took = started.elapsed();
                    return Ok(booted);
                }
                Err(e) => e.to_string(),
            };
            if started.elapsed() > plan.limit {
                return Err(format!(
                    "the server did not accept connections on {} within {} s (last: {refused}); its error log ends:\n{}",
                    socket.display(),
                    plan.limit.as_secs(),
                    tail(&booted.error_log)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A session with the booted server (no password: the grant tables are skipped).
    pub(crate) fn connect(&self) -> Result<Session> {
        server::connect(&client(), Duration::from_secs(3600))
    }

    /// The error log so far.
    pub(crate) fn error_log(&self) -> String {
        std::fs::read_to_string(&self.error_log).unwrap_or_default()
    }
}

/// The booted server's client: the socket by its name in the working directory.
fn client() -> Client {
    Client {
        user: "root".into(),
        password: None,
        socket: PathBuf::from(SOCKET),
        host: None,
        port: 0,
    }
}

/// The last 3000 bytes of a log.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let start = text.len().saturating_sub(3000);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    text[start..].to_string()
}

impl Drop for Booted {
    fn drop(&mut self) {
        // Its files are thrown away with the layer: no clean shutdown is owed to anyone.
        let _ = self.child.kill();
        let _ = self.child.wait();
        SERVER_PID.store(0, Ordering::SeqCst);
        if let Some(dir) = &self.previous_dir {
            let _ = std::env::set_current_dir(dir);
        }
    }
}
