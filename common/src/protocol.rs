//! The words freeze and its locker say to each other, one line each, over two pipes: the locker's
//! reports to freeze on descriptor [`LOCKER_REPORTS_FD`] and freeze's orders to the locker on
//! descriptor [`FREEZE_ORDERS_FD`] (freeze passes both when it starts the locker).
//!
//! freeze's first words on the orders pipe are its plan: a [`PLAN`] line, `plan N`, then N lines
//! of option-file text with every setting of the run as freeze resolved it (`common::plan` spells
//! them). The [`Order`]s follow; a locker without a plan takes no lock.
//!
//! Owns the vocabulary and its spelling, nothing else: it never reads a pipe or decides what a
//! word means for the lock. A line that is no word of the protocol is an error for the reader to
//! handle, never a word it guesses.
use std::fmt;
use std::str::FromStr;

/// Where the locker writes its [`Report`]s (the first descriptor freeze passes).
pub const LOCKER_REPORTS_FD: i32 = 3;
/// Where the locker reads freeze's [`Order`]s (the second descriptor freeze passes).
pub const FREEZE_ORDERS_FD: i32 = 4;

/// The word that opens freeze's plan, before any [`Order`] (see `common::plan`).
pub const PLAN: &str = "plan";

/// What the locker tells freeze.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// Connected, session set up, privileges fine: waiting for `go`.
    Ready,
    /// A statement (or a replica's open temporary tables) stands in the way of a quiet moment;
    /// told once per blocker.
    Busy(String),
    /// The lock statement is under way.
    Locking,
    /// The lock is held and verified, and the state file says so.
    Acquired,
    /// The server capped the lock attempt; nothing is held.
    TimedOut,
    /// The locker failed; nothing is held. Why, on one line: its error's detail, without the
    /// heading `no lock taken: ` (freeze's error puts it there once; `Error::detail`).
    Failed(String),
    /// The locker could not reach the server. Why, on one line (as for `Failed`).
    Unreachable(String),
}

/// What freeze tells the locker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Now is the moment: take the lock.
    Go,
    /// freeze reports success: from now on only thaw or max-lock-time ends the lock.
    Committed,
}

/// A line that is no word of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unknown(pub String);

impl fmt::Display for Unknown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` is no word of the locker protocol", self.0)
    }
}

/// `text` on one line: a report's detail must not end the line early.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Report::Ready => write!(f, "ready"),
            Report::Busy(who) => write!(f, "busy {}", one_line(who)),
            Report::Locking => write!(f, "locking"),
            Report::Acquired => write!(f, "acquired"),
            Report::TimedOut => write!(f, "timed-out"),
            Report::Failed(why) => write!(f, "failed {}", one_line(why)),
            Report::Unreachable(why) => write!(f, "unreachable {}", one_line(why)),
        }
    }
}

impl FromStr for Report {
    type Err = Unknown;

    fn from_str(line: &str) -> Result<Report, Unknown> {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match (word, rest.is_empty()) {
            ("ready", true) => Ok(Report::Ready),
            ("locking", true) => Ok(Report::Locking),
            ("acquired", true) => Ok(Report::Acquired),
            ("timed-out", true) => Ok(Report::TimedOut),
            ("busy", false) => Ok(Report::Busy(rest.to_string())),
            ("failed", false) => Ok(Report::Failed(rest.to_string())),
            ("unreachable", false) => Ok(Report::Unreachable(rest.to_string())),
            _ => Err(Unknown(line.to_string())),
        }
    }
}

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Order::Go => "go",
            Order::Committed => "committed",
        })
    }
}

impl FromStr for Order {
    type Err = Unknown;

    fn from_str(line: &str) -> Result<Order, Unknown> {
        match line {
            "go" => Ok(Order::Go),
            "committed" => Ok(Order::Committed),
            _ => Err(Unknown(line.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_reads_back_as_itself_in_today_s_spelling() {
        let reports = [
            (Report::Ready, "ready"),
            (
                Report::Busy("id 7 (root, 12 s): SELECT 1".into()),
                "busy id 7 (root, 12 s): SELECT 1",
            ),
            (Report::Locking, "locking"),
            (Report::Acquired, "acquired"),
            (Report::TimedOut, "timed-out"),
            (
                Report::Failed("no usable plan from freeze: x".into()),
                "failed no usable plan from freeze: x",
            ),
            (
                Report::Unreachable("cannot connect".into()),
                "unreachable cannot connect",
            ),
        ];
        for (report, line) in reports {
            assert_eq!(report.to_string(), line);
            assert_eq!(line.parse::<Report>(), Ok(report));
        }
        for (order, line) in [(Order::Go, "go"), (Order::Committed, "committed")] {
            assert_eq!(order.to_string(), line);
            assert_eq!(line.parse::<Order>(), Ok(order));
        }
    }

    #[test]
    fn a_misspelt_or_truncated_word_is_refused_and_details_stay_on_one_line() {
        for line in [
            "acquire",
            "Acquired",
            "timed_out",
            "busy",
            "failed",
            "ready now",
            "",
            "go ",
        ] {
            assert!(line.parse::<Report>().is_err(), "`{line}` was accepted");
        }
        assert!("GO".parse::<Order>().is_err());
        assert_eq!(Report::Failed("a\nb\rc".into()).to_string(), "failed a b c");
    }
}
