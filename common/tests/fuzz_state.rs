//! Hostile input for the state-file reader: random bytes and mutated valid states in a run-dir's
//! `state.json` must read as nothing, stale or a state — never a panic or a hang — through the
//! library (`StateFile::peek`). The binaries that read it (`mysql-snapshot-thaw` and
//! `thaw --status`) are fuzzed by the suite's `fuzz_state` module, where they are built and
//! checked. Bounded by `FUZZ_SECONDS` (default 3 s per target); `soak/fuzz.sh` runs longer.
#![allow(clippy::unwrap_used)]

mod fuzzing;

use std::path::Path;
use std::time::Duration;

use common::state::{Found, StateFile};
use fuzzing::state::{seeds, RunDir, DICTIONARY};

/// The library reads any bytes as nothing, stale or a state; a state survives a round trip.
fn check_peek(run_dir: &Path) {
    let found = StateFile::open(run_dir, false)
        .expect("a private run-dir is accepted")
        .peek()
        .expect("peek never fails on a readable run-dir");
    if let Found::State(state) = found {
        let _ = state.in_progress();
        let _ = common::time::rfc3339(state.started_at_ms);
        for at in [
            state.acquired_at_ms,
            state.released_at_ms,
            state.thawed_at_ms,
        ] {
            let _ = at.map(common::time::rfc3339);
        }
        let text = serde_json::to_string(&state).unwrap();
        let again: common::state::State = serde_json::from_str(&text).unwrap();
        assert_eq!(
            serde_json::to_value(&again).unwrap(),
            serde_json::to_value(&state).unwrap(),
            "a state did not survive a round trip"
        );
    }
}

#[test]
fn random_and_mutated_state_files_never_panic_the_reader() {
    let run = RunDir::new("state-lib");
    let run_dir = run.run();
    let ran = fuzzing::run(
        "state-peek",
        seeds(),
        DICTIONARY,
        Duration::from_secs(5),
        move |input| {
            let path = run_dir.join("state.json");
            std::fs::write(&path, input).unwrap();
            check_peek(&run_dir);
        },
    );
    assert!(ran > 100, "only {ran} inputs ran");
    let peak = fuzzing::peak_rss_kib();
    assert!(peak < 512 * 1024, "peak memory {peak} KiB");
}
