//! Who runs beside whom. The tests are one binary, and libtest runs any two of them side by side
//! (tests/run.sh: `--test-threads=2` on a 2-core machine), so a test that loads the machine — a
//! QEMU guest under TCG, a Galera cluster, the soak, the server matrix, qemu-ga on MySQL — would
//! otherwise share it with another test and see its own timings stretched.
//!
//! One process-wide `RwLock` decides: a **heavy** test holds its write side (it runs alone), a
//! **light** test its read side (light tests run side by side). A test never has to remember it:
//! the harness takes the light side when a test first makes a temp dir, a server, a sandbox or
//! asks for the binaries, and the heavy side when it starts a VM (`vm::SourceGuest::start`), a
//! Galera cluster, or a `guest_agent::Rig` on MySQL; a heavy test that starts none of those
//! (the soak, the matrix) calls `heavy()` first. A light side taken earlier is given up before the
//! heavy side is waited for: a thread never waits for the lock it holds.
//!
//! The side is held until the test's thread ends (libtest runs each test on a thread of its own,
//! named after the test), so it outlives the test's servers and guests. Only such a thread takes
//! it: threads a test spawns are unnamed and run under their test's side (they never wait, so a
//! test never deadlocks on its own helpers), and the main thread — the benchmark, or a libtest
//! that runs tests there one at a time — takes none. Machine-wide locks (the VM slot, the freeze
//! window of `loopfs`) are always taken after the side, never before it.

use std::cell::RefCell;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

static GATE: RwLock<()> = RwLock::new(());

/// The side this thread holds.
enum Side {
    Light(#[allow(dead_code)] RwLockReadGuard<'static, ()>),
    Heavy(#[allow(dead_code)] RwLockWriteGuard<'static, ()>),
}

thread_local! {
    static HELD: RefCell<Option<Side>> = const { RefCell::new(None) };
}

/// True on a test's own thread (libtest names it after the test); false on the main thread and
/// on the unnamed threads a test spawns.
fn on_a_test_thread() -> bool {
    std::thread::current()
        .name()
        .is_some_and(|name| name != "main")
}

/// The calling test runs beside other light tests, never beside a heavy one, from here to its
/// end. Nothing if it already holds a side.
pub fn light() {
    if !on_a_test_thread() {
        return;
    }
    HELD.with(|held| {
        let mut held = held.borrow_mut();
        if held.is_none() {
            let guard = GATE.read().unwrap_or_else(PoisonError::into_inner);
            *held = Some(Side::Light(guard));
        }
    });
}

/// The calling test runs alone from here to its end: waits until no other test runs, and keeps
/// every other test waiting. Gives up a light side first.
pub fn heavy() {
    if !on_a_test_thread() {
        return;
    }
    HELD.with(|held| {
        let mut held = held.borrow_mut();
        if matches!(*held, Some(Side::Heavy(_))) {
            return;
        }
        *held = None;
        let guard = GATE.write().unwrap_or_else(PoisonError::into_inner);
        *held = Some(Side::Heavy(guard));
    });
}
