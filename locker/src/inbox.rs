//! What the locker listens to: freeze's orders pipe (its plan first, then its words), the signals
//! that stop it, and its helper threads (the info file's writer, the syncs) saying they are done.
//! All of it arrives as [`Event`]s on one channel, read by [`Inbox`]'s waits, each of which says
//! what it waits for.
//!
//! Owns the listening threads and the channel; it never decides what an event means for the lock
//! (the locker does) and never touches the server, the state file or the info file. The inbox
//! holds a sender of its own, so its channel never disconnects: a wait ends with an event or at
//! its deadline, nothing else.
use std::fmt;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use common::protocol::{self, Order};
use common::{Config, Error, Result};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// What reaches the locker while it runs.
enum Event {
    /// freeze says: now is a quiet moment, take the lock.
    Go,
    /// Something that ends the run before its time.
    Stop(Stop),
    /// A helper thread is done: its result waits on its own channel (see [`Inbox::reply`]).
    Done,
}

/// What ends the locker's run before its time (or, once it holds, before `max-lock-time`).
pub(crate) enum Stop {
    /// SIGTERM (thaw's request) or SIGINT.
    Signal(i32),
    /// freeze closed its end of the orders pipe without `committed` (or said something that is
    /// no order): it failed or died.
    FreezeGone,
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::Signal(signal) => write!(f, "stopped by signal {signal}"),
            Stop::FreezeGone => f.write_str("freeze ended without reporting success"),
        }
    }
}

/// The longest the locker waits for freeze's plan (freeze writes it as soon as the locker is
/// started: a locker without one was started by hand, or its freeze stopped).
const PLAN_WAIT: Duration = Duration::from_secs(10);

/// The locker's events, on one channel.
pub(crate) struct Inbox {
    events: Receiver<Event>,
    /// The channel's own sender: it keeps the channel open, and the helpers' replies are its
    /// clones.
    sender: Sender<Event>,
}

/// A helper thread's way back: its result on a channel of its own, then [`Event::Done`] to wake
/// the wait.
pub(crate) struct Reply<T> {
    result: Sender<T>,
    wake: Sender<Event>,
}

impl<T> Reply<T> {
    /// Hands `result` to the wait (gone already, when the locker stopped waiting: nothing to do).
    pub(crate) fn send(self, result: T) {
        let _ = self.result.send(result);
        let _ = self.wake.send(Event::Done);
    }
}

impl Inbox {
    /// Starts reading freeze's orders pipe (descriptor 4) and waits for its plan, at most
    /// [`PLAN_WAIT`]: the inbox, and the plan or why there is none (no pipe, nothing in time, a
    /// line that is no plan). freeze's words follow in the inbox: `go`; `committed`, after which
    /// freeze's end is no stop; the pipe's end (or a word that is none) without `committed`,
    /// [`Stop::FreezeGone`].
    pub(crate) fn open(orders: Option<std::fs::File>) -> (Inbox, Result<Config>) {
        let (inbox, plan) = Inbox::listen(orders);
        let plan = plan.recv_timeout(PLAN_WAIT).unwrap_or_else(|_| {
            Err(Error::Plan {
                problem: format!(
                    "none arrived on descriptor {} within {} s",
                    protocol::FREEZE_ORDERS_FD,
                    PLAN_WAIT.as_secs()
                ),
            })
        });
        (inbox, plan)
    }

    /// Starts reading freeze's orders pipe on a thread of its own: the plan on the receiver
    /// returned besides the inbox, then freeze's words in the inbox.
    fn listen(orders: Option<std::fs::File>) -> (Inbox, Receiver<Result<Config>>) {
        let (sender, events) = mpsc::channel();
        let inbox = Inbox {
            events,
            sender: sender.clone(),
        };
        let (plan_tx, plan) = mpsc::sync_channel(1);
        let Some(orders) = orders else {
            let _ = plan_tx.send(Err(Error::Plan {
                problem: format!(
                    "descriptor {} (freeze's orders pipe) is not open",
                    protocol::FREEZE_ORDERS_FD
                ),
            }));
            return (inbox, plan);
        };
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut orders = std::io::BufReader::new(orders);
            let read = common::plan::read(&mut orders);
            let planned = read.is_ok();
            if plan_tx.send(read).is_err() || !planned {
                return;
            }
            for line in orders.lines() {
                match line.map(|l| l.parse::<Order>()) {
                    Ok(Ok(Order::Go)) => {
                        let _ = sender.send(Event::Go);
                    }
                    Ok(Ok(Order::Committed)) => return,
                    // An unknown word or a broken pipe: freeze is not following the protocol.
                    Ok(Err(_)) | Err(_) => break,
                }
            }
            let _ = sender.send(Event::Stop(Stop::FreezeGone));
        });
        (inbox, plan)
    }

    /// SIGTERM and SIGINT stop the locker from now on (SIGHUP is swallowed).
    pub(crate) fn listen_for_signals(&self) -> std::io::Result<()> {
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
        let sender = self.sender.clone();
        std::thread::spawn(move || {
            for signal in signals.forever() {
                if signal != SIGHUP {
                    let _ = sender.send(Event::Stop(Stop::Signal(signal)));
                }
            }
        });
        Ok(())
    }

    /// A way back for a helper thread, and where [`Inbox::wait_for`] finds its result.
    pub(crate) fn reply<T>(&self) -> (Reply<T>, Receiver<T>) {
        let (result, results) = mpsc::channel();
        let wake = self.sender.clone();
        (Reply { result, wake }, results)
    }

    /// The next event, waiting until `deadline` at most (`None`: however long it takes); `None`
    /// once the deadline passed. The channel never disconnects (the inbox holds a sender).
    fn next(&self, deadline: Option<Instant>) -> Option<Event> {
        let wait = deadline.map_or(Duration::MAX, |at| {
            at.saturating_duration_since(Instant::now())
        });
        self.events.recv_timeout(wait).ok()
    }

    /// Waits for freeze's `go`: `Err` with the stop that came first instead.
    pub(crate) fn wait_for_go(&self) -> std::result::Result<(), Stop> {
        loop {
            match self.next(None) {
                Some(Event::Go) => return Ok(()),
                Some(Event::Stop(stop)) => return Err(stop),
                Some(Event::Done) | None => {}
            }
        }
    }

    /// Waits for a stop until `deadline` (`None`: none came by then); freeze's words and helpers
    /// done meanwhile are not for this wait.
    pub(crate) fn stop_before(&self, deadline: Instant) -> Option<Stop> {
        loop {
            match self.next(Some(deadline))? {
                Event::Stop(stop) => return Some(stop),
                Event::Go | Event::Done => {}
            }
        }
    }

    /// [`Inbox::stop_before`] a while from now.
    pub(crate) fn stop_within(&self, wait: Duration) -> Option<Stop> {
        self.stop_before(Instant::now() + wait)
    }

    /// Waits for the helper whose [`Reply`] goes to `results`, but never past a stop: `Err` with
    /// the stop that came first.
    pub(crate) fn wait_for<T>(&self, results: &Receiver<T>) -> std::result::Result<T, Stop> {
        loop {
            match self.next(None) {
                Some(Event::Stop(stop)) => return Err(stop),
                Some(Event::Done) => {
                    if let Ok(result) = results.try_recv() {
                        return Ok(result);
                    }
                }
                Some(Event::Go) | None => {}
            }
        }
    }
}
