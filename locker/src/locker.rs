//! The locker: the one process that talks to the server for a freeze and holds the database lock
//! across the snapshot.
//!
//! freeze starts it in its own session with stdio on /dev/null, a pipe to freeze on descriptor 3
//! and a pipe from freeze on descriptor 4, on which freeze first writes its plan: every setting
//! of the run as freeze resolved it (`common::plan`). The locker never reads a config file for
//! its lock, and without a plan it takes none. It connects, sets up its session and checks its
//! privileges while freeze claims the run. On freeze's `go` it waits for a quiet moment, takes the
//! lock with a server-side cap, reads the coordinates, writes the info file, checks that its
//! connection (and with it the lock) survived, records `acquired` in the state file and tells
//! freeze. It then holds until SIGTERM (thaw), `max-lock-time`, or the end of freeze's pipe without
//! `committed` (freeze failed). On the way out it **releases first**, then records, then logs: the
//! filesystem may be frozen, and nothing may delay the release. Once it has said `acquired` it
//! writes nothing but the state file on tmpfs. SIGHUP is ignored. Before `go` the state file may
//! belong to another snapshot, so it touches nothing: failures then reach freeze only through the
//! pipe.
//!
//! What it says to freeze and hears from it are the words of `common::protocol`; what it listens
//! to (freeze's words, signals, its helper threads) reaches it through `crate::inbox`.
//!
//! Exit status: 0 once a held lock was released (how the hold ended, a lost lock included, is in
//! the state file), 1 when it ended without holding one (a capped attempt, a failure, a stop
//! before the lock), 2 for a bad argument. freeze judges an attempt by the state file and the words, never by the
//! status; it is there for a person reading `ps` or a core dump.
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::inbox::{Inbox, Stop};
use crate::info_writer::InfoWriter;
use argh::FromArgs;
use common::cli::Failure;
use common::config::SyncFilesystems;
use common::coordinates;
use common::durability;
use common::error::{Lost, NoLock};
use common::info_file::{self, InfoFile, LockSection, Mark, PendingInfoFile, StorageSection};
use common::lifecycle::{Acquired, End};
use common::lock::{Attempt, Choice, LockMode};
use common::preparation;
use common::process::Identity;
use common::protocol::{self, Report};
use common::quiet::QuietWindow;
use common::replica_safe::{self, Moment};
use common::replication;
use common::state::{Found, Reason, State, StateFile};
use common::storage;
use common::surroundings::{self, Surroundings};
use common::{cli, logging, processlist, server, time, Config, Error, Result};
use mysql::prelude::Queryable;

/// `stop` came while the step `during` waited for a helper: no lock for freeze (the caller
/// releases at once).
fn stopped_while(stop: Stop, during: &str) -> Error {
    Error::NotLocked(NoLock::Stopped {
        by: stop.to_string(),
        during: during.to_string(),
    })
}

/// The longest a release the locker makes on its own waits for the info file's mark.
const MARK_BEFORE_RELEASE: Duration = Duration::from_millis(250);

/// The mark the info file must carry once the run of `state` ends as `end` (`reason`): the
/// lifecycle's projection of the record that end will make.
fn end_mark(mut state: State, end: End, reason: &Reason) -> Option<Mark> {
    state.ended(end, reason.clone());
    state.copy_mark()
}

/// How often the quiet-moment check runs while something long is running.
const QUIET_POLL: Duration = Duration::from_millis(100);

/// `rotate-binlog = on`, with commits blocked: closes the binary log (it ends at the snapshot)
/// and sends the coordinates' `reads` after it, so that they name the next one. How long the
/// rotation took, or `None` when the server refused it: the coordinates are exact either way,
/// and the failure is logged with the lock (`event=locked rotate_ms=-`, then the warning).
fn rotate_binlog(session: &mut server::Session, reads: &[String]) -> Option<u64> {
    let asked = Instant::now();
    let rotated = session.conn.query_drop(ROTATE_BINLOG);
    let rotate_ms = asked.elapsed().as_millis() as u64;
    session.fetch(reads);
    match rotated {
        Ok(()) => Some(rotate_ms),
        Err(err) => {
            log::warn!(
                "event=warning rotate-binlog: {}; the snapshot's coordinates are exact, but its binary log was not rotated",
                Error::server(ROTATE_BINLOG, &err)
            );
            None
        }
    }
}

/// What `rotate-binlog = on` runs under the lock.
const ROTATE_BINLOG: &str = "FLUSH BINARY LOGS";

/// The least of max-lock-time that must be left when freeze is told `acquired`: a quarter of
/// it, at most a second.
fn hold_margin(max_lock_time: u64) -> Duration {
    Duration::from_millis((max_lock_time * 250).min(1000))
}

#[derive(FromArgs)]
/// Holds the database lock for one snapshot (started by mysql-snapshot-freeze, which hands it
/// the run's resolved settings on descriptor 4; not for direct use).
struct Args {
    /// with --write-metrics, --mark-info-file or --fsfreeze-watchdog: the config file (absent:
    /// the built-in defaults, as for freeze). The lock's own run reads no config file: freeze
    /// writes it every setting, resolved, on descriptor 4
    #[argh(option)]
    config: Option<PathBuf>,
    /// the config file freeze resolved the plan from, for `ps` (and the tests) to tell whose
    /// locker this is; never read: the settings come from the plan on descriptor 4
    #[argh(option)]
    #[allow(dead_code)]
    plan_of: Option<PathBuf>,
    /// write the metrics file from the update on stdin (started by freeze and thaw, detached,
    /// when `metrics-file` is set)
    #[argh(switch)]
    write_metrics: bool,
    /// mark the info file with the mark on stdin (started by freeze, thaw and the locker,
    /// detached, when a copy stops being consistent)
    #[argh(switch)]
    mark_info_file: bool,
    /// freeze the `--mount` filesystems, and thaw them on `thaw` or the end of stdin (started
    /// by `freeze --run --fsfreeze`, detached; see common::fsfreeze)
    #[argh(switch)]
    fsfreeze_watchdog: bool,
    /// with --fsfreeze-watchdog: a mount point to freeze (repeated)
    #[argh(option)]
    mount: Vec<PathBuf>,
    /// print the version and exit
    #[argh(switch)]
    version: bool,
}

impl cli::Program for Args {
    const NAME: &'static str = "locker";
    fn wants_version(&self) -> bool {
        self.version
    }
}

pub(crate) fn main() -> ExitCode {
    cli::run(run)
}

/// The fsfreeze watchdog's run: thaws at the latest `max-lock-time` plus a margin after it froze.
/// It writes nothing but its words to freeze (no log: it must not need the frozen filesystems).
fn fsfreeze_watchdog(
    config: Option<&std::path::Path>,
    mounts: &[PathBuf],
) -> Result<ExitCode, Failure> {
    use common::fsfreeze;
    let config = Config::load(config).map_err(|err| {
        // Never a panic on a pipe freeze has closed.
        cli::out(&format!(
            "failed the config: {}\n",
            cli::one_line(&err.to_string())
        ));
        Failure::told(1)
    })?;
    let deadline = Duration::from_secs(config.max_lock_time) + fsfreeze::WATCHDOG_MARGIN;
    match fsfreeze::watch(mounts, deadline, std::io::stdin(), std::io::stdout()) {
        true => Ok(ExitCode::SUCCESS),
        // It told freeze (`failed ...`).
        false => Err(Failure::told(1)),
    }
}

/// The locker's run (or its helpers') with its arguments: `Ok` once the held lock was released,
/// `Err` otherwise: 2 for a bad argument (on stderr), else 1. The locking run's failures are told
/// to freeze, in the log and, once the run is this snapshot's, in the state file; a helper's are
/// logged.
fn run(args: Args) -> Result<ExitCode, Failure> {
    if args.write_metrics {
        return write_metrics(args.config.as_deref());
    }
    if args.mark_info_file {
        return mark_info_file(args.config.as_deref());
    }
    if args.fsfreeze_watchdog {
        return fsfreeze_watchdog(args.config.as_deref(), &args.mount);
    }
    if args.config.is_some() || !args.mount.is_empty() {
        return Err(Error::Usage(
            "the locker takes its settings from freeze's plan on descriptor 4, not from --config; it is started by mysql-snapshot-freeze, not by hand"
                .into(),
        )
        .into());
    }
    // First the orders pipe: the plan freeze writes on it right after the start is all the
    // locker waits for, and nothing before it needs a setting.
    let notify = common::process::inherited_fd(protocol::LOCKER_REPORTS_FD);
    let (inbox, plan) = Inbox::open(common::process::inherited_fd(protocol::FREEZE_ORDERS_FD));
    let config = plan.map_err(|err| refuse_without_plan(notify.as_ref(), err))?;
    logging::init("locker", &config, false);
    // The plan carries the mode freeze resolved (its --lock-mode over the file's): one mode from
    // here on, the privileges it needs included.
    let sync = config.sync_filesystems == SyncFilesystems::On;
    let mut locker =
        Locker::new(config, sync, notify, inbox).map_err(|err| Failure::logged(err, 1))?;
    match locker.run() {
        Ok(Ended::Released) => Ok(ExitCode::SUCCESS),
        // Why is told to freeze, and recorded once the run is ours.
        Ok(Ended::NotHeld) => Err(Failure::told(1)),
        Err(err) => {
            locker.fail(&err);
            Err(Failure::told(1))
        }
    }
}

/// Logs the lock mode a freeze takes, once it is final, and why (stable keys: `event=lock-mode
/// mode= requested= reason=`).
fn log_choice(choice: &Choice) {
    log::info!(
        "event=lock-mode mode={} requested={} reason=\"{}\"",
        choice.mode.name(),
        choice.requested.name(),
        choice.why
    );
}

/// How a locker's run ended without an error.
enum Ended {
    /// The lock was held and released (how the hold ended, lost included, is in the state file).
    Released,
    /// Ended before holding the lock: told to stop (a signal, freeze gone) or an attempt the
    /// server capped. Told to freeze, and recorded once the run is ours.
    NotHeld,
}

/// The tables scan on a connection of its own: `None` when that connection could not be had.
type ScanAside = std::thread::JoinHandle<Option<durability::TablesScan>>;

/// Waits for the scan aside and records what it found in `durability` (it began before the lock:
/// DDL could still change the tables until the lock blocks it). Without its connection, the scan
/// runs on `conn` now.
fn join_scan(
    scan: ScanAside,
    conn: &mut mysql::Conn,
    info: &server::ServerInfo,
    durability: &mut durability::Durability,
) {
    let scan = scan
        .join()
        .ok()
        .flatten()
        .unwrap_or_else(|| durability::scan_tables_on(conn, info));
    durability.apply(scan, durability::ReadAt::BeforeTheLock);
}

/// Starts the scan for non-transactional tables (the slowest read before the lock: milliseconds
/// on MySQL's data dictionary, tens of them under load) on a connection of its own, so that it
/// overlaps the locker's checks and quiet-moment wait instead of adding to them. `None` from the
/// thread when that connection cannot be had (`max_connections`, say): the locker then scans on
/// its own.
fn scan_tables_aside(
    client: &common::config::Client,
    info: &server::ServerInfo,
    read_timeout: Duration,
) -> ScanAside {
    let (client, info) = (client.clone(), info.clone());
    std::thread::spawn(move || {
        // The locker's connection has read who the server is: the handshake is enough here.
        let mut conn = server::open(&client, read_timeout).ok()?;
        if info.flavor == server::Flavor::MySql {
            // Never wait on a Group Replication group.
            let _ = conn.query_drop(common::group_replication::EVENTUAL);
        }
        Some(durability::scan_tables_on(&mut conn, &info))
    })
}

/// `--mark-info-file`: marks `info-file` with the mark freeze, thaw or a locker wrote on stdin.
/// Run detached, so that a write stuck on a frozen filesystem holds up nobody.
fn mark_info_file(config: Option<&std::path::Path>) -> Result<ExitCode, Failure> {
    let config = cli::start("locker", config, false)?;
    let mut input = String::new();
    let mark = std::io::Read::read_to_string(&mut std::io::stdin(), &mut input)
        .map_err(|e| e.to_string())
        .and_then(|_| serde_json::from_str::<Mark>(&input).map_err(|e| e.to_string()));
    let mark = mark.map_err(|err| {
        log::error!("event=info-file unreadable mark on stdin: {err}");
        Failure::told(1)
    })?;
    match info_file::mark(&config.info_file, &mark) {
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(err) => {
            log::error!(
                "event=info-file cannot mark {} {}: {err}. A copy taken now may carry the last snapshot's record: check the directory",
                config.info_file.display(),
                mark.state.name()
            );
            Err(Failure::told(1))
        }
    }
}

/// `--write-metrics`: applies the update freeze or thaw wrote on stdin to `metrics-file`. Run
/// detached, so that a write stuck on a frozen filesystem holds up nobody.
fn write_metrics(config: Option<&std::path::Path>) -> Result<ExitCode, Failure> {
    let config = cli::start("locker", config, false)?;
    let Some(path) = config.metrics_file.clone() else {
        return Ok(ExitCode::SUCCESS);
    };
    let mut input = String::new();
    let update = std::io::Read::read_to_string(&mut std::io::stdin(), &mut input)
        .map_err(|e| e.to_string())
        .and_then(|_| {
            serde_json::from_str::<common::metrics::Update>(&input).map_err(|e| e.to_string())
        });
    let update = update.map_err(|err| {
        log::error!("event=metrics unreadable update on stdin: {err}");
        Failure::told(1)
    })?;
    match common::metrics::write(&path, &config.run_dir, &update) {
        Ok(warning) => {
            if let Some(warning) = warning {
                log::warn!("event=metrics {warning}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            log::error!(
                "event=metrics cannot write {}: {err}. Check that its directory exists and is writable (node_exporter's textfile directory)",
                path.display()
            );
            Err(Failure::told(1))
        }
    }
}

/// No plan, so no settings: says why to freeze (`failed`) and on stderr, takes no lock, exits 1.
fn refuse_without_plan(notify: Option<&std::fs::File>, err: Error) -> Failure {
    let detail = err.detail().to_string();
    logging::init_stderr("locker");
    let failure = Failure::logged(err, 1);
    if let Some(mut pipe) = notify {
        let _ = writeln!(pipe, "{}", Report::Failed(detail));
    }
    failure
}

struct Locker {
    config: Config,
    state: StateFile,
    notify: Option<std::fs::File>,
    /// freeze's words, signals, helpers done.
    inbox: Inbox,
    /// freeze said `go`: the state file is this snapshot's.
    ours: bool,
    /// `--sync-filesystems`: sync the server's filesystems before saying `acquired`.
    sync: bool,
    /// `replica-safe`: the SQL threads this locker stopped (started again in `record_end`).
    replica: Option<StoppedSql>,
}

/// What `prepare` leaves for the steps after `go`.
struct Prepared {
    session: server::Session,
    choice: Choice,
    around: Surroundings,
    to_sync: Option<Vec<storage::Filesystem>>,
    /// The tables scan running aside; `None` for the backup lock, which lists them under the lock.
    tables: Option<ScanAside>,
}

/// What `get_ready` leaves for the lock: `Prepared`'s, with the info file's writer running and
/// when the freeze started.
struct Ready {
    session: server::Session,
    choice: Choice,
    around: Surroundings,
    to_sync: Option<Vec<storage::Filesystem>>,
    writer: InfoWriter,
    /// When freeze claimed the run: the snapshot's id in the info file.
    started_at_ms: u64,
    /// The tables scan still running aside (`Prepared`'s), joined by the lock at the last moment
    /// before commits block.
    tables: Option<ScanAside>,
}

/// A lock held: its connection, its mode, since when, and the log file's deferral.
struct Held {
    session: server::Session,
    mode: LockMode,
    acquired: Instant,
    /// The log file waits while the lock is held; `release` drops this once it has released.
    log_file: logging::DeferredFile,
}

/// The lock just taken: its mode and when (the answers of the reads sent with it wait in the
/// session).
struct Taken {
    mode: LockMode,
    acquired: Instant,
    acquired_at_ms: u64,
    /// The snapshot's id in the info file.
    snapshot_id: u64,
}

/// Replica SQL threads stopped for the lock, and the connection of our own that stopped them
/// (the lock's connection may be gone when they must start again).
struct StoppedSql {
    session: server::Session,
    names: Vec<String>,
}

impl StoppedSql {
    /// Starts the threads again: on our connection, or on a fresh one if that is gone.
    fn start(mut self, client: &common::config::Client) -> Result<()> {
        match replica_safe::start(&mut self.session.conn, &self.session.info, &self.names) {
            Ok(()) => Ok(()),
            Err(_) => replica_safe::restart_left(client, &self.names),
        }
    }
}

impl Locker {
    /// The locker: freeze's reports pipe taken over, signals listened to besides freeze's orders
    /// (already in `inbox`), the state file opened (read only until `go`).
    fn new(
        config: Config,
        sync: bool,
        notify: Option<std::fs::File>,
        inbox: Inbox,
    ) -> Result<Locker> {
        inbox.listen_for_signals().map_err(|source| Error::Setup {
            what: "install signal handlers",
            source,
        })?;
        let state = StateFile::open(&config.run_dir, false)?;
        Ok(Locker {
            notify,
            state,
            config,
            inbox,
            ours: false,
            sync,
            replica: None,
        })
    }

    /// The run failed with `err`: logs it, tells freeze (`unreachable` or `failed`, with the
    /// error's detail: freeze says `no lock taken` itself), and records it once the state file is
    /// this snapshot's (or SQL threads it stopped must start again).
    fn fail(&mut self, err: &Error) {
        log::error!("event={} {err}", err.event());
        let detail = err.detail().to_string();
        self.notify(match err {
            Error::Connect { .. } => Report::Unreachable(detail),
            _ => Report::Failed(detail),
        });
        if self.ours || self.replica.is_some() {
            self.record_end(End::Failed, Reason::Other(err.to_string()));
        }
    }

    /// The locker's life in named steps: prepare (before freeze's `go`, touching nothing), wait
    /// for `go`, get ready (info file, replica-safe, quiet moment, preconditions), take the lock,
    /// hold it, release it. A step that is told to stop records why and ends the run `NotHeld`.
    fn run(&mut self) -> Result<Ended> {
        let prepared = self.prepare()?;
        // Connected and ready: freeze decides when (it claims the run meanwhile). Until `go` the
        // state file may not be ours yet: touch nothing.
        self.notify(Report::Ready);
        if self.inbox.wait_for_go().is_err() {
            return Ok(Ended::NotHeld);
        }
        self.ours = true;
        let Some(ready) = self.get_ready(prepared)? else {
            return Ok(Ended::NotHeld);
        };
        let Some(held) = self.take_lock(ready)? else {
            return Ok(Ended::NotHeld);
        };
        let cause = self.hold(held.acquired);
        self.release(held, cause);
        Ok(Ended::Released)
    }

    /// Before `go`: connects and prepares as `--check` does (`common::preparation`: the mode
    /// resolved for the server and settled by the sync setting, the privileges and the
    /// surroundings, the session capped; the backup lock's last precondition, the tables, is
    /// checked under it), with the tables scan started aside for the other modes as soon as the
    /// mode is known. Everything that can refuse the freeze while nothing is held refuses it here.
    fn prepare(&mut self) -> Result<Prepared> {
        let read_timeout = Duration::from_secs(self.config.lock_wait_timeout + 10);
        let mut session = server::connect(&self.config.client, read_timeout)?;
        // Only once the locker's own connection is had: the lock must never lose the last free
        // connection slot to the scan. The backup lock lists the tables under itself instead.
        let info = session.info.clone();
        let scan_aside = |choice: &Choice| {
            (choice.mode != LockMode::BackupLock)
                .then(|| scan_tables_aside(&self.config.client, &info, read_timeout))
        };
        let mut tables = None;
        let prepared = preparation::prepare(
            &mut session,
            &self.config,
            self.sync,
            surroundings::Tables::Elsewhere,
            |choice| tables = scan_aside(choice),
        )?;
        if let Ok(grants) = &prepared.grants {
            if let (Some(err), true) = (grants.error(), grants.has_roles) {
                log::warn!(
                    "event=privileges {err} (unless a role grants it: roles are not checked)"
                );
            }
        }
        let preparation::Prepared {
            choice,
            around,
            to_sync,
            ..
        } = prepared.into_freeze()?;
        match choice.mode {
            // Final once the tables are listed under it.
            LockMode::BackupLock => {}
            _ => {
                log_choice(&choice);
                if tables.is_none() {
                    tables = scan_aside(&choice);
                }
            }
        }
        Ok(Prepared {
            session,
            choice,
            around,
            to_sync,
            tables,
        })
    }

    /// After `go`, before the lock: opens the info file (an unwritable directory fails before any
    /// lock), makes a replica safe, waits for a quiet moment and records `waiting`. `None` when told to stop meanwhile
    /// (recorded).
    fn get_ready(&mut self, prepared: Prepared) -> Result<Option<Ready>> {
        let Prepared {
            mut session,
            choice,
            around,
            to_sync,
            tables,
        } = prepared;
        // Its writer thread starts now, off the path from lock to `acquired`. freeze marked the
        // info file `freezing` before its `go`: no copy from now on carries an earlier record as
        // this moment's.
        let pending = PendingInfoFile::create(&self.config.info_file)?;
        let writer = InfoWriter::start(pending, &self.inbox);
        if let Some(stop) = self.make_replica_safe(&mut session)? {
            self.stopped(
                &stop,
                "while replica-safe waited for the replica's temporary tables",
            );
            return Ok(None);
        }
        if let Some(stop) = self.wait_for_quiet_moment(choice.mode, &mut session)? {
            self.stopped(&stop, "while waiting for a quiet moment");
            return Ok(None);
        }
        let started_at_ms = self.record_waiting(&session, choice.mode)?;
        if let Some(stop) = self.inbox.stop_before(Instant::now()) {
            self.stopped(&stop, "before locking");
            return Ok(None);
        }
        Ok(Some(Ready {
            session,
            choice,
            around,
            to_sync,
            writer,
            started_at_ms,
            tables,
        }))
    }

    /// Records `waiting` with who holds the attempt (this locker, its connection and account, the
    /// mode); returns when the freeze started.
    fn record_waiting(&self, session: &server::Session, mode: LockMode) -> Result<u64> {
        let me = Identity::current();
        let connection_id = session.info.connection_id;
        let user = self.config.client.user.clone();
        let mut started_at_ms = 0;
        self.update(|s| {
            s.waiting(me, connection_id, user, mode);
            started_at_ms = s.started_at_ms;
        })?;
        Ok(started_at_ms)
    }

    /// Records that `stop` ended the run `when` (a step before the lock). With freeze gone, no
    /// one else is left to mark the info file: a copy taken now has no lock.
    fn stopped(&mut self, stop: &Stop, when: &str) {
        let why = Reason::Other(format!("{stop} {when}; no lock was taken"));
        if matches!(stop, Stop::FreezeGone) {
            if let Some(mark) = self.mark_of_end(End::Failed, &why) {
                info_file::mark_now(&self.config, &mark);
            }
        }
        self.record_end(End::Failed, why);
    }

    /// Takes the lock, capped by the server, then reads and records what the snapshot is and says
    /// `acquired`. `None` when the server capped the attempt (recorded, told). Anything that fails
    /// once the lock is held releases it before it reports. The backup lock lists the tables
    /// under itself; one that is not crash-safe releases it, and `auto` then takes FTWRL.
    fn take_lock(&mut self, ready: Ready) -> Result<Option<Held>> {
        let Ready {
            mut session,
            mut choice,
            mut around,
            to_sync,
            mut writer,
            started_at_ms,
            mut tables,
        } = ready;
        // With rotate-binlog the coordinates' reads follow the rotation instead: it changes what
        // they read.
        let rotates = |mode: LockMode| self.config.rotate_binlog && mode.blocks_commits();
        let (attempt_started, preconditions) = loop {
            self.notify(Report::Locking);
            let mode = choice.mode;
            let attempt_started = Instant::now();
            // The coordinates' reads travel with the lock statement: no round trip between the
            // lock and what it makes exact.
            let mut batched = match rotates(mode) {
                true => Vec::new(),
                false => coordinates::statements(&session.info, mode),
            };
            if mode == LockMode::BackupLock {
                batched.push(durability::tables_statement(&session.info));
            }
            // The other modes' scan only informs the info file: it has had the checks, the
            // surroundings and the quiet moment to run in. BACKUP STAGE waits for what is left of
            // it after BLOCK_DDL, where commits still flow, so it overlaps the stages before. FTWRL
            // waits for it before its statements: its pre-flush must come right before the lock
            // (a wait between them lets the tables be opened again, by the writers and, on
            // MariaDB, by the scan itself, and the lock then stalls the writers longer: measured,
            // BENCHMARKS.md). No writer waits for the scan; the info file lists the tables every
            // time.
            let after_block_ddl = mode == LockMode::BackupStage
                && tables.as_ref().is_some_and(|scan| !scan.is_finished());
            if !after_block_ddl {
                if let Some(scan) = tables.take() {
                    join_scan(
                        scan,
                        &mut session.conn,
                        &session.info,
                        &mut around.durability,
                    );
                }
            }
            let info = &session.info;
            let durability = &mut around.durability;
            let mut join = |conn: &mut mysql::Conn| {
                if let Some(scan) = tables.take() {
                    join_scan(scan, conn, info, durability);
                }
            };
            let (attempt, answers) = mode.acquire(
                &mut session.conn,
                self.config.pre_flush,
                &batched,
                after_block_ddl.then_some(&mut join as &mut dyn FnMut(&mut mysql::Conn)),
            )?;
            session.answers = answers;
            if let Attempt::TimedOut { statement, message } = attempt {
                let reason = self.timed_out(&mut session, statement, &message, attempt_started);
                self.record_end(End::TimedOut, Reason::Other(reason));
                self.notify(Report::TimedOut);
                return Ok(None);
            }
            if mode != LockMode::BackupLock {
                break (attempt_started, None);
            }
            // DDL is blocked: no table can appear or change engine while this scan runs.
            let scan = durability::scan_tables(&mut session);
            around
                .durability
                .apply(scan, durability::ReadAt::UnderTheLock);
            let refusals = around.durability.table_refusals();
            if refusals.is_empty() {
                log_choice(&choice);
                break (
                    attempt_started,
                    Some(around.durability.backup_lock_preconditions()),
                );
            }
            mode.release(&mut session.conn)?;
            around.durability.listed_before_the_lock();
            choice = choice.settle(refusals)?;
            log_choice(&choice);
            // The fallback waits for what holds it up, as any attempt does.
            if let Some(stop) = self.wait_for_quiet_moment(choice.mode, &mut session)? {
                self.stopped(&stop, "while waiting for a quiet moment");
                return Ok(None);
            }
            self.record_waiting(&session, choice.mode)?;
        };
        let mode = choice.mode;
        let rotate = rotates(mode);
        let acquired = Instant::now();
        let acquired_at_ms = time::now_unix_ms();
        // From here until release the log file waits: only the info file (before `acquired`, by
        // its writer thread) and the state file on tmpfs are written.
        let log_file = logging::defer_file();
        let binlog_rotated_ms = match rotate {
            true => {
                let reads = coordinates::statements(&session.info, mode);
                rotate_binlog(&mut session, &reads)
            }
            false => None,
        };
        let recorded = self.record_acquired(
            &mut session,
            &mut writer,
            to_sync.as_deref(),
            around,
            LockSection {
                mode: mode.name().into(),
                requested: choice.requested.name().into(),
                why: choice.why.clone(),
                acquired_at: time::rfc3339(acquired_at_ms),
                waited_ms: acquired_at_ms.saturating_sub(started_at_ms),
                locker_pid: std::process::id(),
                preconditions,
                binlog_rotated_ms,
            },
            Taken {
                mode,
                acquired,
                acquired_at_ms,
                snapshot_id: started_at_ms,
            },
        );
        if let Err(err) = recorded {
            // The held record may be on disk already: no copy may pair it with what follows.
            self.mark_before_release(self.mark_of_end(
                End::Released,
                &Reason::Other(format!("freeze could not report success: {err}")),
            ));
            let _ = mode.release(&mut session.conn);
            drop(log_file);
            return Err(err);
        }
        self.notify(Report::Acquired);
        self.notify = None; // freeze has what it needs; close our end.
        log::info!(
            "event=locked mode={} connection={} lock_ms={} rotate_ms={}",
            mode.name(),
            session.info.connection_id,
            acquired.duration_since(attempt_started).as_millis(),
            binlog_rotated_ms.map_or("-".to_string(), |ms| ms.to_string())
        );
        Ok(Some(Held {
            session,
            mode,
            acquired,
            log_file,
        }))
    }

    /// Why an attempt the server capped at `statement` ended, naming the longest statement
    /// running then (other than ours).
    fn timed_out(
        &self,
        session: &mut server::Session,
        statement: &str,
        message: &str,
        attempt_started: Instant,
    ) -> String {
        let ours = session.info.connection_id;
        let longest =
            processlist::long_statements(&mut session.conn, 0, &self.config.ignore_commands)
                .ok()
                .and_then(|all| all.into_iter().find(|b| b.id != ours));
        format!(
            "`{statement}` capped by the server after {} ms: {message}; longest running statement: {}",
            attempt_started.elapsed().as_millis(),
            longest.map_or("none".to_string(), |b| b.to_string())
        )
    }

    /// Holds the lock taken at `acquired` until thaw's SIGTERM (or another stop), or `None` at
    /// max-lock-time.
    fn hold(&self, acquired: Instant) -> Option<Stop> {
        self.inbox
            .stop_before(acquired + Duration::from_secs(self.config.max_lock_time))
    }

    /// Releases first, then records why the lock ended (`cause`; `None`: max-lock-time), then
    /// logs: only thaw's request keeps the promise.
    fn release(&mut self, mut held: Held, cause: Option<Stop>) {
        // One read of the record: whether thaw asked, and what the mark must say.
        let recorded = match self.state.peek() {
            Ok(Found::State(state)) => Some(state),
            _ => None,
        };
        let thaw_asked = recorded
            .as_ref()
            .is_some_and(|s| s.thaw_requested_at_ms.is_some());
        let reason = match cause {
            None => Reason::Other(format!(
                "max-lock-time ({} s) reached before thaw",
                self.config.max_lock_time
            )),
            Some(Stop::Signal(_)) if thaw_asked => Reason::Thaw,
            Some(stop) => Reason::Other(stop.to_string()),
        };
        // The info file is marked before the release, within a bound: a frozen filesystem must
        // not delay it. On thaw's request the filesystems are thawed (thaw runs after FITHAW), so
        // the mark is written here, in-process: no process start on the path to the release.
        let mark = recorded.and_then(|state| end_mark(*state, End::Released, &reason));
        match reason {
            Reason::Thaw => self.mark_here_before_release(mark),
            Reason::Other(_) => self.mark_before_release(mark),
        }
        let released = held.mode.release(&mut held.session.conn);
        let held_ms = held.acquired.elapsed().as_millis();
        let (end, reason) = match released {
            Ok(()) => (End::Released, reason),
            Err(err) => (
                End::Lost,
                Reason::Other(format!("the connection holding the lock was gone at release ({err}); the lock was lost before {reason}")),
            ),
        };
        if end == End::Lost {
            // The lock is gone already: the mark need not be waited for.
            if let Some(mark) = self.mark_of_end(end, &reason) {
                let marked = info_file::mark_detached(&self.config.path, &mark, Duration::ZERO);
                if let info_file::Marked::Failed(_) = marked {
                    info_file::log_marked(&marked, &mark, &self.config.info_file, Duration::ZERO);
                }
            }
        }
        self.record_end(end, reason.clone());
        drop(held.log_file);
        match (end, &reason) {
            (End::Released, Reason::Thaw) => {
                log::info!("event=released reason=thaw held_ms={held_ms}")
            }
            (End::Released, _) => log::error!(
                "event=released reason=\"{reason}\" held_ms={held_ms}: the lock ended before thaw; the snapshot may not be application-consistent"
            ),
            _ => log::error!("event=lost held_ms={held_ms} {reason}"),
        }
    }

    /// Reads the coordinates (from the answers `taken` holds where it can), writes the info file,
    /// syncs the server's filesystems (`to_sync`, with `sync-filesystems` on), checks that the
    /// connection (and with it the lock) is still there, and records `acquired` with the
    /// coordinates.
    fn record_acquired(
        &mut self,
        session: &mut server::Session,
        writer: &mut InfoWriter,
        to_sync: Option<&[storage::Filesystem]>,
        around: Surroundings,
        lock: LockSection,
        taken: Taken,
    ) -> Result<()> {
        let Taken {
            mode,
            acquired,
            acquired_at_ms,
            snapshot_id,
        } = taken;
        let coordinates = coordinates::read(session, mode)?;
        let around = self.read_under_lock(session, &coordinates, around)?;
        let storage_flags = around.storage.flags.clone();
        let durability_warnings: Vec<String> = around
            .durability
            .risks()
            .into_iter()
            .filter(|r| r.hard)
            .map(|r| r.text)
            .collect();
        let mut info = InfoFile::new(&session.info, &coordinates, lock, snapshot_id);
        info.storage = Some(StorageSection {
            paths: around.storage.paths,
            flags: around.storage.flags,
            synced: to_sync.map(<[storage::Filesystem]>::to_vec),
        });
        info.durability = Some(around.durability);
        info.galera = around.galera;
        info.group_replication = around.group_replication;
        writer.write(info);
        // Wait for the write, but never past a stop: the caller then releases at once, even if
        // the write hangs on a frozen filesystem.
        self.inbox
            .wait_for(writer.written())
            .map_err(|stop| stopped_while(stop, "the info file was being written"))??;
        // After the info file, so that it is synced too.
        let synced = match to_sync {
            Some(filesystems) => Some(self.sync_filesystems(filesystems, acquired)?),
            None => None,
        };
        self.check_still_held(session, acquired)?;
        self.update(|s| {
            s.held(Acquired {
                at_ms: acquired_at_ms,
                coordinates: coordinates.clone(),
                synced,
                storage_flags,
                durability_warnings,
            })
        })
    }

    /// What only the lock makes exact, added to the surroundings: whether the server replicates
    /// (known from the coordinates, read anyway: no query before the lock), a replica's open
    /// temporary tables and the SQL threads replica-safe stopped, a Galera node's position.
    fn read_under_lock(
        &self,
        session: &mut server::Session,
        coordinates: &coordinates::Coordinates,
        mut around: Surroundings,
    ) -> Result<Surroundings> {
        around.durability.replica = !coordinates.replicas.is_empty();
        if let Some(stopped) = &self.replica {
            around.durability.replica_sql_stopped = stopped.names.clone();
        }
        if around.durability.replica {
            // While the SQL thread is held by the lock (or stopped): what a clone would miss.
            around.durability.replica_open_temp_tables =
                durability::replica_open_temp_tables(&mut session.conn)?;
        }
        if let Some(node) = around.galera.as_mut() {
            // Commits are blocked: this is the node's exact position.
            node.set_position(common::galera::last_committed(&mut session.conn)?);
        }
        Ok(around)
    }

    /// `sync-filesystems`: syncs `filesystems` on a thread of their own, bounded so that they end
    /// while the lock taken at `acquired` still has time left to be of use; never waits past a
    /// stop.
    fn sync_filesystems(
        &self,
        filesystems: &[storage::Filesystem],
        acquired: Instant,
    ) -> Result<Vec<storage::Synced>> {
        let limit = self.config.sync_timeout.min(
            self.time_left(acquired)
                .saturating_sub(hold_margin(self.config.max_lock_time)),
        );
        let filesystems = filesystems.to_vec();
        let (done, synced) = self.inbox.reply();
        std::thread::spawn(move || done.send(storage::sync_all(&filesystems, limit)));
        self.inbox
            .wait_for(&synced)
            .map_err(|stop| stopped_while(stop, "the filesystems were being synced"))?
    }

    /// The last checks before `acquired`: enough of max-lock-time left to be of use (else the
    /// lock would end at once: refuse and release), and the lock's connection still there after
    /// the disk writes (the lock lives as long as it).
    fn check_still_held(&self, session: &mut server::Session, acquired: Instant) -> Result<()> {
        if self.time_left(acquired) <= hold_margin(self.config.max_lock_time) {
            return Err(Error::NotLocked(NoLock::HoldSpent {
                took_ms: acquired.elapsed().as_millis(),
                max_lock_time: self.config.max_lock_time,
            }));
        }
        let check = "DO 0";
        session.conn.query_drop(check).map_err(|e| {
            Error::LockLost(Lost::ConnectionGone {
                error: server::describe(&e),
            })
        })
    }

    /// Marks the info file with `mark` before a release the locker makes on its own, by a
    /// detached writer waited for at most `MARK_BEFORE_RELEASE`: the release is never held up
    /// longer, and a copy taken while the filesystem is frozen still holds what the held record
    /// describes (docs/consistency.md, "What every copy says").
    fn mark_before_release(&self, mark: Option<Mark>) {
        let Some(mark) = mark else {
            return;
        };
        let marked = info_file::mark_detached(&self.config.path, &mark, MARK_BEFORE_RELEASE);
        info_file::log_marked(&marked, &mark, &self.config.info_file, MARK_BEFORE_RELEASE);
    }

    /// Marks the info file with `mark` on a thread of ours, waited for at most
    /// `MARK_BEFORE_RELEASE` (thaw's request: the filesystems are thawed, and thaw marks the file
    /// itself if it still says held once the lock is gone). A write that hangs leaves this
    /// process to end when the filesystem thaws; it holds nothing by then.
    fn mark_here_before_release(&self, mark: Option<Mark>) {
        let Some(mark) = mark else {
            return;
        };
        let (done, written) = mpsc::channel();
        let path = self.config.info_file.clone();
        let writing = mark.clone();
        std::thread::spawn(move || {
            let _ = done.send(info_file::mark(&path, &writing).map(|_| ()));
        });
        let marked = match written.recv_timeout(MARK_BEFORE_RELEASE) {
            Ok(Ok(())) => info_file::Marked::Done,
            Ok(Err(err)) => info_file::Marked::Failed(err.to_string()),
            Err(_) => info_file::Marked::Pending,
        };
        info_file::log_marked(&marked, &mark, &self.config.info_file, MARK_BEFORE_RELEASE);
    }

    /// The mark the info file must carry once this run ends as `end` (`reason`): the lifecycle's
    /// projection of the record that end will make (`None`: the record is gone).
    fn mark_of_end(&self, end: End, reason: &Reason) -> Option<Mark> {
        let Ok(Found::State(state)) = self.state.peek() else {
            return None;
        };
        end_mark(*state, end, reason)
    }

    /// What is left of max-lock-time for a lock taken at `acquired`.
    fn time_left(&self, acquired: Instant) -> Duration {
        Duration::from_secs(self.config.max_lock_time).saturating_sub(acquired.elapsed())
    }

    /// `replica-safe`: on a replica, waits for a moment when its SQL threads hold no temporary
    /// table open and stops them then (recorded in the state file before the STOP), telling
    /// freeze while it waits. `Some(stop)` when told to stop meanwhile. Off, or not a replica:
    /// nothing. Stopped threads start again in `record_end`, on every way out.
    fn make_replica_safe(&mut self, session: &mut server::Session) -> Result<Option<Stop>> {
        if !self.config.replica_safe {
            return Ok(None);
        }
        let read_timeout = Duration::from_secs(self.config.lock_wait_timeout + 10);
        let mut reported = None;
        loop {
            let replicas = replication::read_replicas(session)?;
            if replicas.is_empty() {
                return Ok(None);
            }
            let running = replica_safe::running(&replicas);
            let open = durability::replica_open_temp_tables(&mut session.conn)?.unwrap_or(0);
            match replica_safe::moment(open, &running) {
                Moment::Clear if running.is_empty() => return Ok(None),
                Moment::Clear => {
                    if let Some(open) = self.stop_sql_threads(session, running, read_timeout)? {
                        reported = self.tell_waiting(open, reported);
                    } else {
                        return Ok(None);
                    }
                }
                Moment::Stuck { open } => return Err(replica_safe::stuck_error(open)),
                Moment::Wait { open } => reported = self.tell_waiting(open, reported),
            }
            if let Some(stop) = self.inbox.stop_within(QUIET_POLL) {
                return Ok(Some(stop));
            }
        }
    }

    /// Stops the SQL threads `names` and reads the open temporary tables again, now stable.
    /// `None`: none open, the threads stay stopped. `Some(open)`: one was opened in between; the
    /// threads were started again.
    fn stop_sql_threads(
        &mut self,
        session: &mut server::Session,
        names: Vec<String>,
        read_timeout: Duration,
    ) -> Result<Option<u64>> {
        let mut own = match self.replica.take() {
            Some(stopped) => stopped.session,
            None => server::connect(&self.config.client, read_timeout)?,
        };
        let recorded = names.clone();
        self.update(|s| s.replica_sql_stopped = Some(recorded))?;
        if let Err(err) = replica_safe::stop(&mut own.conn, &own.info, &names) {
            // stop() started again what it had stopped.
            let _ = self.update(|s| s.replica_sql_stopped = None);
            return Err(err);
        }
        self.replica = Some(StoppedSql {
            session: own,
            names,
        });
        let open = durability::replica_open_temp_tables(&mut session.conn)?.unwrap_or(0);
        if open == 0 {
            log::info!(
                "event=replica-safe stopped the SQL thread(s) {} with no temporary table open",
                replica_safe::list(
                    &self
                        .replica
                        .as_ref()
                        .map_or(Vec::new(), |r| r.names.clone())
                )
            );
            return Ok(None);
        }
        if let Some(stopped) = self.replica.as_mut() {
            replica_safe::start(
                &mut stopped.session.conn,
                &stopped.session.info,
                &stopped.names,
            )?;
            stopped.names.clear();
        }
        self.update(|s| s.replica_sql_stopped = None)?;
        Ok(Some(open))
    }

    /// Tells freeze that replica-safe waits (once per count), returning what was told.
    fn tell_waiting(&self, open: u64, reported: Option<u64>) -> Option<u64> {
        if reported != Some(open) {
            self.notify(Report::Busy(replica_safe::waiting_text(open)));
        }
        Some(open)
    }

    /// Waits until no statement that would hold up the lock has run past `long-query-threshold`,
    /// telling freeze about each one in the way. `Some(stop)` when told to stop meanwhile.
    fn wait_for_quiet_moment(
        &self,
        mode: LockMode,
        session: &mut server::Session,
    ) -> Result<Option<Stop>> {
        let quiet = QuietWindow {
            config: &self.config,
            mode,
            flavor: session.info.flavor,
        };
        let conn = &mut session.conn;
        let mut reported: Option<u64> = None;
        loop {
            let Some(blocker) = quiet.blocker(conn)? else {
                return Ok(None);
            };
            if reported != Some(blocker.id) {
                self.notify(Report::Busy(blocker.to_string()));
                reported = Some(blocker.id);
            }
            if let Some(stop) = self.inbox.stop_within(QUIET_POLL) {
                return Ok(Some(stop));
            }
        }
    }

    /// Tells freeze about a status change; a closed pipe (freeze gone) is not an error.
    fn notify(&self, report: Report) {
        if let Some(mut pipe) = self.notify.as_ref() {
            let _ = pipe.write_all(format!("{report}\n").as_bytes());
        }
    }

    /// Applies `change` to the state under the flock. The state must still be this snapshot's.
    fn update(&self, change: impl FnOnce(&mut State)) -> Result<()> {
        let guard = self.state.lock()?;
        match guard.read() {
            Found::State(mut state) => {
                change(&mut state);
                guard.write(&state)
            }
            Found::Nothing | Found::Stale(_) => Err(Error::State {
                path: self.state.path(),
                message: "the state file vanished or was replaced while the locker ran".into(),
            }),
        }
    }

    /// Records how this locker ended; failures to record are logged, never fatal. SQL threads
    /// replica-safe stopped are started again first (the lock is gone by now), so that a thaw that
    /// sees the end recorded also finds replication running; if they cannot be, their names stay
    /// in the state for thaw.
    fn record_end(&mut self, end: End, reason: Reason) {
        let restarted = self.replica.take().map(|stopped| {
            let started = stopped.start(&self.config.client);
            if let Err(err) = &started {
                log::error!("event=replica {err}");
            }
            started.is_ok()
        });
        let result = self.update(|s| {
            if restarted == Some(true) {
                s.replica_sql_stopped = None;
            }
            s.ended(end, reason);
        });
        if let Err(err) = result {
            log::warn!("event=state-error cannot record the end ({end:?}): {err}");
        }
    }
}
