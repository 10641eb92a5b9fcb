//! Checks the option-file reader against the real client's parser: MariaDB's `my_print_defaults`
//! (package `mariadb-client`) over the corpus in `tests/optfile_corpus/` (see its README.md).
//! Without `my_print_defaults` these tests fail; they never pass silently.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::optfile::{self, Entry, OptionFileError};

const ORACLE: &str = "my_print_defaults";
/// Groups compared for every accepted file.
const GROUPS: [&str; 2] = ["client", "mysql-snapshot"];

/// A copy of the corpus in a temp dir, files mode 0600 and `@DIR@` replaced by the copy's path.
struct Corpus {
    dir: PathBuf,
}

impl Corpus {
    fn copy(name: &str) -> Corpus {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/optfile_corpus");
        let dir =
            std::env::temp_dir().join(format!("optfile-oracle-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let corpus = Corpus { dir };
        corpus.copy_dir(&source, &corpus.dir);
        corpus
    }

    fn copy_dir(&self, from: &Path, to: &Path) {
        use std::os::unix::fs::PermissionsExt;
        fs::create_dir_all(to).expect("create corpus copy dir");
        fs::set_permissions(to, fs::Permissions::from_mode(0o700)).expect("chmod corpus dir");
        let placeholder = self.dir.to_str().expect("temp dir path is UTF-8");
        for item in fs::read_dir(from).expect("list corpus dir") {
            let item = item.expect("corpus dir entry");
            let target = to.join(item.file_name());
            if item.file_type().expect("file type").is_dir() {
                self.copy_dir(&item.path(), &target);
                continue;
            }
            let bytes = fs::read(item.path()).expect("read corpus file");
            fs::write(&target, replace(&bytes, b"@DIR@", placeholder.as_bytes()))
                .expect("write corpus copy");
            fs::set_permissions(&target, fs::Permissions::from_mode(0o600))
                .expect("chmod corpus copy");
        }
    }

    /// Top-level `*.cnf` files whose names start with `prefix` ("" for the accepted ones).
    fn cases(&self, prefix: &str) -> Vec<PathBuf> {
        let mut cases: Vec<PathBuf> = fs::read_dir(&self.dir)
            .expect("list corpus copy")
            .map(|item| item.expect("corpus entry").path())
            .filter(|path| {
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                let special = name.starts_with("error-") || name.starts_with("strict-");
                path.is_file()
                    && name.ends_with(".cnf")
                    && if prefix.is_empty() {
                        !special
                    } else {
                        name.starts_with(prefix)
                    }
            })
            .collect();
        cases.sort();
        cases
    }

    /// The `expect-error: FILE:LINE` comment of `case`, as an absolute path and a line.
    fn expected_error(&self, case: &Path) -> (PathBuf, usize) {
        let bytes = fs::read(case).expect("read case");
        let text = String::from_utf8_lossy(&bytes);
        let marker = text
            .split("expect-error: ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("{} has no expect-error comment", case.display()));
        let (file, line) = marker.rsplit_once(':').expect("expect-error is FILE:LINE");
        (
            self.dir.join(file),
            line.parse().expect("expect-error line is a number"),
        )
    }
}

impl Drop for Corpus {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn replace(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some((first, after)) = rest.split_first() {
        if let Some(after_placeholder) = rest.strip_prefix(from) {
            out.extend_from_slice(to);
            rest = after_placeholder;
        } else {
            out.push(*first);
            rest = after;
        }
    }
    out
}

/// Runs the oracle on `file` for `group`, with passwords shown unmasked.
fn oracle(file: &Path, group: &str) -> Output {
    // MySQL's my_print_defaults masks passwords unless given -s; MariaDB's has no -s and never masks.
    static SHOW_FLAG: OnceLock<bool> = OnceLock::new();
    let show = *SHOW_FLAG.get_or_init(|| {
        let help = run(Command::new(ORACLE).arg("--help"));
        String::from_utf8_lossy(&help.stdout).contains("--show")
    });
    let mut command = Command::new(ORACLE);
    command.arg(format!("--defaults-file={}", file.display()));
    if show {
        command.arg("-s");
    }
    run(command.arg(group))
}

fn run(command: &mut Command) -> Output {
    match command.output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "{ORACLE} is not installed, so the option-file reader cannot be checked against the \
             real client: install the mariadb-client package (apt-get install mariadb-client)"
        ),
        Err(e) => panic!("cannot run {ORACLE}: {e}"),
    }
}

/// What `my_print_defaults` prints for `group`: `--key=value` or `--key`, one per line.
fn render(entries: &[Entry], group: &str) -> Vec<u8> {
    let mut out = String::new();
    for entry in entries.iter().filter(|e| e.group == group) {
        out.push_str("--");
        out.push_str(&entry.key);
        if let Some(value) = &entry.value {
            out.push('=');
            out.push_str(value);
        }
        out.push('\n');
    }
    out.into_bytes()
}

/// The line number in the client's "... in config file: F at line[:] N" message, if any.
fn client_error_line(stderr: &[u8]) -> Option<usize> {
    let text = String::from_utf8_lossy(stderr);
    let after = text.split(" at line").nth(1)?;
    let digits: String = after
        .trim_start_matches([':', ' '])
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn describe(error: &OptionFileError) -> String {
    format!("{error}")
}

#[test]
fn accepted_corpus_files_read_like_my_print_defaults() {
    let corpus = Corpus::copy("accepted");
    let cases = corpus.cases("");
    assert!(
        cases.len() >= 15,
        "only {} accepted corpus files",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let ours = match optfile::read(case) {
            Ok(entries) => entries,
            Err(e) => {
                failures.push(format!(
                    "{}: we refuse it: {}",
                    case.display(),
                    describe(&e)
                ));
                continue;
            }
        };
        for group in GROUPS {
            let theirs = oracle(case, group);
            if !theirs.status.success() || !theirs.stderr.is_empty() {
                failures.push(format!(
                    "{} [{group}]: {ORACLE} did not read it cleanly ({}): {}",
                    case.display(),
                    theirs.status,
                    String::from_utf8_lossy(&theirs.stderr)
                ));
                continue;
            }
            let mine = render(&ours, group);
            if mine != theirs.stdout {
                failures.push(format!(
                    "{} [{group}]:\n--- {ORACLE}:\n{}--- ours:\n{}",
                    case.display(),
                    String::from_utf8_lossy(&theirs.stdout),
                    String::from_utf8_lossy(&mine)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn error_corpus_files_are_refused_by_both_at_the_same_line() {
    let corpus = Corpus::copy("errors");
    let cases = corpus.cases("error-");
    assert!(cases.len() >= 5, "only {} error corpus files", cases.len());
    for case in &cases {
        let theirs = oracle(case, "client");
        assert!(
            !theirs.status.success(),
            "{ORACLE} accepts {} but it should be a syntax error",
            case.display()
        );
        let error = optfile::read(case).expect_err(&format!("we must refuse {}", case.display()));
        let (file, line) = corpus.expected_error(case);
        assert_eq!(
            (error.file.as_path(), error.line),
            (file.as_path(), Some(line)),
            "place of our error {}",
            describe(&error)
        );
        if let Some(client_line) = client_error_line(&theirs.stderr) {
            assert_eq!(
                client_line,
                line,
                "{ORACLE} reports another line for {}: {}",
                case.display(),
                String::from_utf8_lossy(&theirs.stderr)
            );
        }
    }
}

/// Deliberate differences: the client quietly reads these (often not as written); we refuse.
#[test]
fn strict_corpus_files_are_accepted_by_the_client_but_refused_by_us() {
    let corpus = Corpus::copy("strict");
    let cases = corpus.cases("strict-");
    assert!(
        cases.len() >= 10,
        "only {} strict corpus files",
        cases.len()
    );
    for case in &cases {
        let theirs = oracle(case, "client");
        assert!(
            theirs.status.success(),
            "{ORACLE} now refuses {} ({}); move it to error-*",
            case.display(),
            String::from_utf8_lossy(&theirs.stderr)
        );
        let error = optfile::read(case).expect_err(&format!("we must refuse {}", case.display()));
        let (file, line) = corpus.expected_error(case);
        assert_eq!(
            (error.file.as_path(), error.line),
            (file.as_path(), Some(line)),
            "place of our error {}",
            describe(&error)
        );
    }
}

#[test]
fn password_with_special_characters_matches_the_client() {
    let corpus = Corpus::copy("password");
    let file = corpus.dir.join("password.cnf");
    let wanted = r#"p#a;s s"w'o\rd"#;
    let ours = optfile::read(&file).expect("password.cnf reads");
    let passwords: Vec<&str> = ours
        .iter()
        .filter(|e| e.group == "mysql-snapshot" && e.normalized_key() == "password")
        .filter_map(|e| e.value.as_deref())
        .collect();
    assert_eq!(passwords, [wanted]);
    let theirs = oracle(&file, "mysql-snapshot");
    assert_eq!(
        String::from_utf8_lossy(&theirs.stdout),
        format!("--password={wanted}\n")
    );
}
