//! Hostile input for the option-file reader: mutated corpus files (the oracle corpus plus
//! `fuzz_corpus/optfile/`) must never panic, hang or explode memory, and whatever they parse to
//! must be well-formed; generated files must read back exactly what was written. Bounded by
//! `FUZZ_SECONDS` (default 3 s per target); `soak/fuzz.sh` runs longer.
#![allow(clippy::unwrap_used)]

mod fuzzing;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::optfile::{self, Entry};

const NAME: &str = "/fuzz/input.cnf";

const DICTIONARY: &[&[u8]] = &[
    b"[client]\n",
    b"[mysql-snapshot]\n",
    b"[client-mariadb]\n",
    b"password = ",
    b"max-lock-time = ",
    b"lock-mode = backup-stage\n",
    b"run-dir = /run/x\n",
    b"\"",
    b"'",
    b"\\",
    b"\\\"",
    b"#",
    b";",
    b"=",
    b"!include ",
    b"!includedir ",
    b"/nonexistent-mss-fuzz/x.cnf",
    b"/nonexistent-mss-fuzz",
    b"\r\n",
    b"\n",
    b"\xEF\xBB\xBF",
    b"\xC3\xA0",
    b"\xA0",
    b"\x00",
];

fn seeds() -> Vec<Vec<u8>> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut seeds = fuzzing::corpus(&here.join("fuzz_corpus/optfile"));
    for file in fuzzing::corpus(&here.join("optfile_corpus")) {
        // Includes in the oracle corpus point into its copy; here they point nowhere.
        let text = String::from_utf8_lossy(&file).replace("@DIR@", "/nonexistent-mss-fuzz");
        seeds.push(text.into_bytes());
    }
    seeds
}

/// What must hold for any text the reader accepts or refuses.
fn check_parsed(text: &str) {
    let path = Path::new(NAME);
    let lines = text.split('\n').count();
    match optfile::parse_str(text, path) {
        Ok(entries) => {
            for entry in &entries {
                assert_eq!(
                    entry.file, path,
                    "an entry from an unexpected file: {entry:?}"
                );
                assert!(
                    (1..=lines).contains(&entry.line),
                    "line {} out of 1..={lines}: {entry:?}",
                    entry.line
                );
                assert!(!entry.key.is_empty(), "an empty key: {entry:?}");
                assert_eq!(entry.group, entry.group.to_ascii_lowercase(), "{entry:?}");
                assert!(
                    !entry.key.starts_with([' ', '\t']) && !entry.key.ends_with([' ', '\t']),
                    "a key with blanks around it: {entry:?}"
                );
            }
            let again = optfile::parse_str(text, path).unwrap();
            assert_eq!(entries, again, "the same text parsed differently twice");
        }
        Err(err) => {
            assert!(!err.message.is_empty(), "an error without a message");
            if err.file == path {
                if let Some(line) = err.line {
                    assert!(
                        (1..=lines).contains(&line),
                        "error line {line} out of 1..={lines}"
                    );
                }
            }
        }
    }
}

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn mutated_option_files_never_panic_hang_or_misreport() {
    let scratch =
        Scratch(std::env::temp_dir().join(format!("mss-fuzz-optfile-{}", std::process::id())));
    std::fs::create_dir_all(&scratch.0).unwrap();
    let file = scratch.0.join("fuzz.cnf");
    let mut n = 0u64;
    let ran = fuzzing::run(
        "optfile",
        seeds(),
        DICTIONARY,
        Duration::from_secs(5),
        move |input| {
            check_parsed(&String::from_utf8_lossy(input));
            n += 1;
            if n.is_multiple_of(8) {
                // Raw bytes through the file reader and the settings built from it.
                use std::os::unix::fs::PermissionsExt;
                std::fs::write(&file, input).unwrap();
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
                let _ = optfile::read(&file);
                let _ = common::Config::read(&file);
            }
        },
    );
    assert!(ran > 100, "only {ran} inputs ran");
    let peak = fuzzing::peak_rss_kib();
    assert!(peak < 512 * 1024, "peak memory {peak} KiB");
}

/// A generated file and the entries it must read back as.
fn generated(rng: &mut fuzzing::Rng) -> (String, Vec<(String, String, Option<String>)>) {
    const KEY_FIRST: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    const KEY_REST: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789_-";
    const VALUE: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789./:@+,-_=";
    let mut text = String::new();
    let mut expected = Vec::new();
    let eol = if rng.chance(4) { "\r\n" } else { "\n" };
    for _ in 0..1 + rng.below(4) {
        let group: String = (0..1 + rng.below(12))
            .map(|i| {
                let set = if i == 0 { KEY_FIRST } else { KEY_REST };
                char::from(*rng.pick(set))
            })
            .collect();
        match rng.below(3) {
            0 => text.push_str(&format!("[{group}]{eol}")),
            1 => text.push_str(&format!("[{group}]   # group comment{eol}")),
            _ => text.push_str(&format!("  [{group}]\t{eol}")),
        }
        for _ in 0..rng.below(8) {
            match rng.below(6) {
                0 => text.push_str(&format!("# a comment 'with' \"quotes\"{eol}")),
                1 => text.push_str(&format!("; another = comment{eol}")),
                2 => text.push_str(eol),
                _ => {}
            }
            let key: String = (0..1 + rng.below(16))
                .map(|i| {
                    let set = if i == 0 { KEY_FIRST } else { KEY_REST };
                    char::from(*rng.pick(set))
                })
                .collect();
            let mut value: String = (0..rng.below(24))
                .map(|_| char::from(*rng.pick(VALUE)))
                .collect();
            if value.len() > 2 && rng.chance(3) {
                value.insert(value.len() / 2, ' ');
            }
            let (line, value) = match rng.below(8) {
                0 => (key.clone(), None),
                1 => (format!("{key}={value}"), Some(value)),
                2 => (format!("  {key} \t=  {value}   "), Some(value)),
                3 => (format!("{key} = \"{value}\""), Some(value)),
                4 => (format!("{key} = '{value}'"), Some(value)),
                5 => (format!("{key} = {value} # trailing comment"), Some(value)),
                6 => (
                    format!("{key} = \"{value} # not a comment\""),
                    Some(format!("{value} # not a comment")),
                ),
                _ => (
                    format!("{key} = \"a\\tb\\\\c\\sd\""),
                    Some("a\tb\\c d".to_string()),
                ),
            };
            text.push_str(&line);
            text.push_str(eol);
            expected.push((group.to_ascii_lowercase(), key, value));
        }
    }
    (text, expected)
}

#[test]
fn generated_option_files_read_back_exactly_what_was_written() {
    let mut rng = fuzzing::Rng::new(fuzzing::seed());
    let until = Instant::now() + fuzzing::budget().min(Duration::from_secs(2));
    let mut cases = 0;
    while cases < 200 || Instant::now() < until {
        let (text, expected) = generated(&mut rng);
        let entries = optfile::parse_str(&text, Path::new(NAME))
            .unwrap_or_else(|e| panic!("refused a well-formed file: {e}\n{text}"));
        let got: Vec<(String, String, Option<String>)> = entries
            .into_iter()
            .map(
                |Entry {
                     group, key, value, ..
                 }| (group, key, value),
            )
            .collect();
        assert_eq!(got, expected, "read back differently:\n{text}");
        cases += 1;
    }
}

#[test]
fn huge_and_deep_option_files_are_refused_or_read_in_bounded_time() {
    let cases: Vec<(&str, String)> = vec![
        (
            "a 1 MiB line",
            format!("[client]\nuser={}\n", "x".repeat(1 << 20)),
        ),
        ("100k short lines", "[client]\nuser=x\n".repeat(50_000)),
        ("100k headers", "[a]\n".repeat(100_000)),
        (
            "quotes everywhere",
            format!("[client]\nuser={}\n", "\"'".repeat(1000)),
        ),
        (
            "backslashes",
            format!("[client]\nuser=\"{}\"\n", "\\".repeat(4000)),
        ),
        ("blank lines", "\n".repeat(1 << 20)),
    ];
    for (what, text) in cases {
        let started = Instant::now();
        let _ = optfile::parse_str(&text, Path::new(NAME));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{what} took {:?}",
            started.elapsed()
        );
    }
}
