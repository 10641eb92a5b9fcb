//! The state-file fuzz targets' common ground: the dictionary of state-file tokens, the corpus,
//! and a private run-dir whose config points at no server. Used by `common/tests/fuzz_state.rs`
//! (the library) and the suite's `fuzz_state` (the binaries, which need a built workspace).
//!
//! It never writes outside its temp dir and never names a live process.
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Tokens of a state file, spliced into mutants.
pub(crate) const DICTIONARY: &[&[u8]] = &[
    b"\"status\": \"acquired\"",
    b"\"status\": \"starting\"",
    b"\"status\": \"waiting\"",
    b"\"status\": \"released\"",
    b"\"status\": \"lost\"",
    b"\"reason\": \"thaw\"",
    b"\"released_at_ms\": 18446744073709551615",
    b"\"acquired_at_ms\": 0",
    b"\"thawed_at_ms\": null",
    b"\"locker\": null",
    b"\"pid\": 0",
    b"\"pid\": 4294967295",
    b"\"start_time\": 18446744073709551615",
    b"null",
    b"true",
    b"[]",
    b"{}",
    b"\"\\u0000\"",
    b"\"\\ud800\"",
    b"1e999",
    b"-0",
    b",",
    b":",
];

/// A private run-dir (mode 0700) with a config naming it and sockets that do not exist, so
/// nothing that reads it ever reaches a server or syslog; removed on drop.
pub(crate) struct RunDir {
    dir: PathBuf,
    pub(crate) config: PathBuf,
}

impl RunDir {
    pub(crate) fn new(tag: &str) -> RunDir {
        let dir = std::env::temp_dir().join(format!("mss-fuzz-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let run = dir.join("run");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
        let config = dir.join("fuzz.cnf");
        std::fs::write(
            &config,
            format!(
                "[client]\nuser = root\nsocket = {d}/no-server.sock\n[mysql-snapshot]\nrun-dir = {d}/run\ninfo-file = {d}/info.json\nsyslog-socket = {d}/no-syslog.sock\n",
                d = dir.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
        RunDir { dir, config }
    }

    pub(crate) fn run(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// Writes `bytes` as the run-dir's `state.json` (mode 0600).
    pub(crate) fn plant(&self, bytes: &[u8]) {
        let path = self.run().join("state.json");
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The state corpus (`common/tests/fuzz_corpus/state/`), found from either crate that includes
/// this module (both sit beside `common/` in the workspace).
pub(crate) fn seeds() -> Vec<Vec<u8>> {
    super::corpus(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../common/tests/fuzz_corpus/state"))
}
