//! Reader for MySQL option files (`my.cnf`), the syntax the `mysql`/`mariadb` client reads, checked
//! against MariaDB's `my_print_defaults`. It owns the syntax: files and their `!include`s become
//! [`Entry`]s, and a mistake names its file and line. It must never panic on any input, never follow
//! an include loop or nest deeper than the client, and never read unbounded data. Where the client
//! quietly reads something other than what is written, we refuse ("Deliberate difference" below).

use std::fmt;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest option file read.
const MAX_FILE_BYTES: u64 = 1 << 20;
/// The client reads with `fgets` into a 4096-byte buffer: a longer line is cut into pieces, each
/// then parsed as a line of its own. 4094 bytes (without the `\n`) is the most it takes whole.
const MAX_LINE_BYTES: usize = 4094;
/// The client follows `!include` only from files at most this deep (the named file is depth 0).
const MAX_INCLUDE_DEPTH: usize = 10;
/// Files read in all, so that includes fanning out cannot make the work explode.
const MAX_FILES: usize = 1000;
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// One `key[=value]` line of an option file, after includes are followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The group the line belongs to, lower-cased (`client`, `mysql-snapshot`).
    pub group: String,
    /// The key as written, with surrounding blanks removed.
    pub key: String,
    /// The value after quote and escape processing; `None` for a bare key.
    pub value: Option<String>,
    /// The file the line is in (an included file names itself, not the includer).
    pub file: PathBuf,
    /// 1-based line number in `file`.
    pub line: usize,
}

impl Entry {
    /// The key lower-cased with `_` turned into `-`, the form settings are matched on.
    pub fn normalized_key(&self) -> String {
        self.key.to_ascii_lowercase().replace('_', "-")
    }
}

/// Why an option file could not be read.
#[derive(Debug)]
pub struct OptionFileError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for OptionFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for OptionFileError {}

/// Reads `path` and every file it includes, in the order the `mysql` client would.
///
/// # Errors
/// A file that cannot be read, or a syntax error (with its file and line).
pub fn read(path: &Path) -> Result<Vec<Entry>, OptionFileError> {
    let mut reader = Reader::default();
    reader.read_file(path, 0)?;
    Ok(reader.entries)
}

/// Parses `text` as if it were the content of `file`. Relative `!include` paths are resolved
/// against the working directory, as the client does (not against `file`'s directory).
///
/// # Errors
/// As [`read`]; errors in `text` name `file`.
pub fn parse_str(text: &str, file: &Path) -> Result<Vec<Entry>, OptionFileError> {
    let mut reader = Reader::default();
    reader.parse_file(text.as_bytes(), file, 0)?;
    Ok(reader.entries)
}

/// A line of a file, for error messages.
#[derive(Clone, Copy)]
struct Place<'a> {
    file: &'a Path,
    line: usize,
}

impl Place<'_> {
    fn error(self, message: impl Into<String>) -> OptionFileError {
        OptionFileError {
            file: self.file.to_path_buf(),
            line: Some(self.line),
            message: message.into(),
        }
    }
}

#[derive(Default)]
struct Reader {
    entries: Vec<Entry>,
    /// Canonical paths of the files being read, outermost first: a file on it is an include loop.
    open: Vec<PathBuf>,
    files_read: usize,
}

impl Reader {
    fn read_file(&mut self, path: &Path, depth: usize) -> Result<(), OptionFileError> {
        let whole_file = |message: String| OptionFileError {
            file: path.to_path_buf(),
            line: None,
            message,
        };
        self.files_read += 1;
        if self.files_read > MAX_FILES {
            return Err(whole_file(format!(
                "more than {MAX_FILES} option files included; refusing to read on"
            )));
        }
        let meta = fs::metadata(path).map_err(|e| whole_file(format!("cannot read: {e}")))?;
        if !meta.is_file() {
            return Err(whole_file("is not a regular file".into()));
        }
        if is_world_writable(&meta) {
            // Deliberate difference: the client skips such a file with a warning and reads on.
            return Err(whole_file(
                "is world-writable, so anyone may have changed it (the mysql client ignores it); \
                 run chmod o-w on it"
                    .into(),
            ));
        }
        let too_big = || whole_file(format!("is larger than {MAX_FILE_BYTES} bytes"));
        if meta.len() > MAX_FILE_BYTES {
            return Err(too_big());
        }
        let mut bytes = Vec::new();
        fs::File::open(path)
            .and_then(|file| file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
            .map_err(|e| whole_file(format!("cannot read: {e}")))?;
        if u64::try_from(bytes.len()).map_or(true, |len| len > MAX_FILE_BYTES) {
            return Err(too_big());
        }
        self.parse_file(&bytes, path, depth)
    }

    fn parse_file(
        &mut self,
        bytes: &[u8],
        file: &Path,
        depth: usize,
    ) -> Result<(), OptionFileError> {
        self.open.push(canonical(file));
        let result = self.parse(bytes, file, depth);
        self.open.pop();
        result
    }

    fn parse(&mut self, bytes: &[u8], file: &Path, depth: usize) -> Result<(), OptionFileError> {
        // Each file starts outside any group, even an included one: the client does the same.
        let mut group: Option<String> = None;
        for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let at = Place {
                file,
                line: index + 1,
            };
            if index == 0 && raw.starts_with(UTF8_BOM) {
                // The client fails here too, with "option without preceding group".
                return Err(at.error(
                    "starts with a UTF-8 byte-order mark, which the mysql client rejects; \
                     save the file without it",
                ));
            }
            if raw.len() > MAX_LINE_BYTES {
                // Deliberate difference: the client would read the pieces as separate lines.
                return Err(at.error(format!(
                    "line is {} bytes long; the mysql client cuts lines longer than \
                     {MAX_LINE_BYTES} bytes into pieces and reads each as a line of its own",
                    raw.len()
                )));
            }
            if raw.contains(&0) {
                // Deliberate difference: the client ignores the rest of the line after a NUL.
                return Err(at.error("line contains a NUL byte"));
            }
            let text = trim_start(raw);
            match text.split_first() {
                None | Some((b'#' | b';', _)) => {}
                Some((b'!', directive)) => self.directive(directive, at, depth)?,
                Some((b'[', header)) => group = Some(group_name(header, at)?),
                Some(_) => {
                    let Some(group) = &group else {
                        return Err(at.error("option before any [group] header"));
                    };
                    let (key, value) = option(text, at)?;
                    self.entries.push(Entry {
                        group: group.clone(),
                        key,
                        value,
                        file: file.to_path_buf(),
                        line: at.line,
                    });
                }
            }
        }
        Ok(())
    }

    /// `!include FILE` or `!includedir DIR`; `text` follows the `!`.
    fn directive(
        &mut self,
        text: &[u8],
        at: Place<'_>,
        depth: usize,
    ) -> Result<(), OptionFileError> {
        let text = trim_start(text);
        let (keyword, argument) = if let Some(argument) = keyword_argument(text, b"includedir") {
            ("includedir", argument)
        } else if let Some(argument) = keyword_argument(text, b"include") {
            ("include", argument)
        } else {
            // Deliberate difference: the client silently skips unknown directives (`!INCLUDE`).
            let word = text.split(|&b| is_blank(b)).next().unwrap_or_default();
            return Err(at.error(format!(
                "unknown directive '!{}'; only !include and !includedir exist",
                String::from_utf8_lossy(word)
            )));
        };
        // Quotes and `#` are not special here: `!include a # b` names the file "a # b". On the last
        // line without a newline the client drops the last character of the path; we do not.
        let argument = decode(argument, "the path", at)?;
        if argument.is_empty() {
            return Err(at.error(format!("!{keyword} without a path")));
        }
        if depth >= MAX_INCLUDE_DEPTH {
            // Deliberate difference: the client skips the directive with a warning.
            return Err(at.error(format!(
                "!{keyword} nested more than {MAX_INCLUDE_DEPTH} files deep"
            )));
        }
        let path = Path::new(argument);
        if keyword == "include" {
            self.include(path, at, depth)
        } else {
            self.include_dir(path, at, depth)
        }
    }

    fn include(&mut self, path: &Path, at: Place<'_>, depth: usize) -> Result<(), OptionFileError> {
        // Deliberate difference: the client silently skips a missing or unreadable file.
        let meta = fs::metadata(path)
            .map_err(|e| at.error(format!("cannot read !include file {}: {e}", path.display())))?;
        if meta.is_dir() {
            return Err(at.error(format!(
                "!include names a directory, {}; use !includedir",
                path.display()
            )));
        }
        if self.open.contains(&canonical(path)) {
            // Deliberate difference: the client reads the loop again and again until depth 10.
            return Err(at.error(format!(
                "include loop: {} is already being read",
                path.display()
            )));
        }
        // Deliberate difference: the client reports an error inside an included file on stderr,
        // drops the rest of that file and reads on as if nothing happened. We pass it up.
        self.read_file(path, depth + 1)
    }

    /// Every `*.cnf` file in `dir` (names compared case-sensitively), in byte order of the names.
    fn include_dir(
        &mut self,
        dir: &Path,
        at: Place<'_>,
        depth: usize,
    ) -> Result<(), OptionFileError> {
        let unreadable =
            |e: std::io::Error| at.error(format!("cannot read !includedir {}: {e}", dir.display()));
        let mut names = Vec::new();
        for item in fs::read_dir(dir).map_err(unreadable)? {
            let name = item.map_err(unreadable)?.file_name();
            if name.as_encoded_bytes().ends_with(b".cnf") {
                names.push(name);
            }
        }
        names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
        for name in names {
            let path = dir.join(name);
            // The client opens a directory named `x.cnf` too, and finds no lines in it.
            if !path.is_dir() {
                self.include(&path, at, depth)?;
            }
        }
        Ok(())
    }
}

/// What follows `keyword` at the start of `text`, if the keyword is followed by a blank or the end.
fn keyword_argument<'a>(text: &'a [u8], keyword: &[u8]) -> Option<&'a [u8]> {
    let rest = text.strip_prefix(keyword)?;
    match rest.first() {
        None => Some(rest),
        Some(&b) if is_blank(b) => Some(rest),
        Some(_) => None,
    }
}

/// The group of a `[group]` line, lower-cased; `header` follows the `[`.
fn group_name(header: &[u8], at: Place<'_>) -> Result<String, OptionFileError> {
    let mut parts = header.splitn(2, |&b| b == b']');
    let name = parts.next().unwrap_or_default();
    let Some(after) = parts.next() else {
        return Err(at.error("group header without a closing ']'"));
    };
    if !matches!(trim_start(after).first(), None | Some(b'#' | b';')) {
        // Deliberate difference: the client ignores anything after the `]`.
        return Err(at.error("text after the ']' of a group header (the mysql client ignores it)"));
    }
    if name.first().is_some_and(|&b| is_blank(b)) {
        // Deliberate difference: the client keeps the blank, so `[ client]` is another group.
        return Err(at.error(
            "blank after '[' (the mysql client would read a group named \" client\", not \"client\")",
        ));
    }
    // The client compares group names case-insensitively.
    Ok(decode(name, "the group name", at)?.to_ascii_lowercase())
}

/// The key and value of an option line (`text` starts with neither a blank nor `[#;!`).
fn option(text: &[u8], at: Place<'_>) -> Result<(String, Option<String>), OptionFileError> {
    let content = strip_end_comment(text).map_err(|quote| {
        // Deliberate difference: the client takes the rest of the line literally, comment included.
        at.error(format!(
            "unterminated {quote} quote (the mysql client would read the rest of the line, comments \
             included, as written); quote the whole value with the other kind of quote"
        ))
    })?;
    let mut parts = content.splitn(2, |&b| b == b'=');
    let key = decode(parts.next().unwrap_or_default(), "the option name", at)?;
    if key.is_empty() {
        // Deliberate difference: the client turns this into garbage such as `--=value`.
        return Err(at.error("'=' without an option name before it"));
    }
    let value = match parts.next() {
        None => None,
        Some(raw) => Some(unescape(unquote(decode(raw, "the value", at)?))),
    };
    Ok((key.to_owned(), value))
}

/// `text` up to the first `#` outside quotes, or the quote character left open at the end.
///
/// This is the client's rule: quotes count anywhere in the line (even in the key, even when they
/// will not be removed later), a backslash escapes only inside quotes, and `#` needs no blank before.
fn strip_end_comment(text: &[u8]) -> Result<&[u8], char> {
    let mut quote: Option<u8> = None;
    let mut escaped = false;
    for (index, &byte) in text.iter().enumerate() {
        if (byte == b'\'' || byte == b'"') && !escaped {
            match quote {
                None => quote = Some(byte),
                Some(open) if open == byte => quote = None,
                Some(_) => {}
            }
        }
        if quote.is_none() && byte == b'#' {
            return Ok(text.get(..index).unwrap_or_default());
        }
        escaped = quote.is_some() && byte == b'\\' && !escaped;
    }
    match quote {
        Some(open) => Err(char::from(open)),
        None => Ok(text),
    }
}

/// `raw` without surrounding blanks, as text.
fn decode<'a>(raw: &'a [u8], what: &str, at: Place<'_>) -> Result<&'a str, OptionFileError> {
    let start = raw.iter().position(|&b| !is_blank(b)).unwrap_or(raw.len());
    let end = raw
        .iter()
        .rposition(|&b| !is_blank(b))
        .map_or(start, |last| last + 1);
    let trimmed = raw.get(start..end).unwrap_or_default();
    std::str::from_utf8(trimmed).map_err(|_| {
        let cut_character = raw
            .get(start..end + 1)
            .is_some_and(|longer| longer.ends_with(&[0xA0]) && std::str::from_utf8(longer).is_ok());
        if cut_character {
            // Deliberate difference: the client would read a broken character (`à` is C3 A0).
            at.error(format!(
                "{what} ends in a character whose last byte, 0xA0, the mysql client strips as a \
                 Latin-1 blank (putting a value in quotes avoids this)"
            ))
        } else {
            at.error(format!("{what} is not valid UTF-8"))
        }
    })
}

/// The value without one pair of matching quotes around all of it.
fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|rest| rest.strip_suffix(quote))
        {
            return inner;
        }
    }
    value
}

/// `value` as an option-file value that reads back as itself: in double quotes, with the escapes
/// the reader turns back (so that a `#`, a quote, a blank at either end or a line break in it
/// survive). The one way a value is written for this reader.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Backslash escapes, quoted or not: `\n \t \r \b \s \" \' \\`. Any other escape, and a backslash
/// at the end, stay as written.
fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            None => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('b') => out.push('\u{8}'),
            Some('s') => out.push(' '),
            Some(quoted @ ('"' | '\'' | '\\')) => out.push(quoted),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
        }
    }
    out
}

/// The client's blanks: Latin-1 `isspace`, which includes 0xA0 (no-break space).
fn is_blank(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | 0xA0)
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| !is_blank(b))
        .unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or_default()
}

fn canonical(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(unix)]
fn is_world_writable(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o002 != 0
}

#[cfg(not(unix))]
fn is_world_writable(_meta: &fs::Metadata) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory under the system temp dir, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("optfile-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("create scratch dir");
            Scratch(dir)
        }

        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }

        /// Writes `name` (mode 0600) with `@DIR@` replaced by the scratch dir.
        fn write(&self, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
            let path = self.path(name);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).expect("create parent dir");
            }
            let dir = self.0.to_str().expect("temp dir is UTF-8").as_bytes();
            let content = content.as_ref();
            let mut out = Vec::with_capacity(content.len());
            let mut rest = content;
            while !rest.is_empty() {
                if let Some(after) = rest.strip_prefix(b"@DIR@") {
                    out.extend_from_slice(dir);
                    rest = after;
                } else if let Some((first, after)) = rest.split_first() {
                    out.push(*first);
                    rest = after;
                }
            }
            fs::write(&path, out).expect("write scratch file");
            set_mode(&path, 0o600);
            path
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn set_mode(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    fn parse_bytes(bytes: &[u8]) -> Result<Vec<Entry>, OptionFileError> {
        let mut reader = Reader::default();
        reader.parse_file(bytes, Path::new("test.cnf"), 0)?;
        Ok(reader.entries)
    }

    fn entries(text: &str) -> Vec<Entry> {
        parse_str(text, Path::new("test.cnf")).expect("text parses")
    }

    /// `(group, key, value)` of every entry.
    fn triples(text: &str) -> Vec<(String, String, Option<String>)> {
        entries(text)
            .into_iter()
            .map(|e| (e.group, e.key, e.value))
            .collect()
    }

    /// The value of the one option line `line` in a `[client]` group.
    fn value_of(line: &str) -> Option<String> {
        let found = entries(&format!("[client]\n{line}\n"));
        assert_eq!(found.len(), 1, "one entry from {line:?}: {found:?}");
        found.into_iter().next().and_then(|e| e.value)
    }

    fn some(value: &str) -> Option<String> {
        Some(value.to_owned())
    }

    /// The line and message of the error `bytes` must give.
    fn error_of(bytes: impl AsRef<[u8]>) -> (Option<usize>, String) {
        let error = parse_bytes(bytes.as_ref()).expect_err("input must be refused");
        (error.line, error.message)
    }

    fn assert_error(bytes: impl AsRef<[u8]>, line: usize, needle: &str) {
        let (got_line, message) = error_of(bytes);
        assert_eq!(got_line, Some(line), "line of error {message:?}");
        assert!(
            message.contains(needle),
            "{message:?} should mention {needle:?}"
        );
    }

    #[test]
    fn keys_and_values_lose_the_blanks_around_them() {
        assert_eq!(
            triples("[client]\n  user = bob \t\n\thost\t=\tdb\t\n\x0bport\x0c=\x0b3306\x0c\n"),
            [
                ("client".into(), "user".into(), some("bob")),
                ("client".into(), "host".into(), some("db")),
                ("client".into(), "port".into(), some("3306")),
            ]
        );
    }

    #[test]
    fn bare_key_has_no_value() {
        assert_eq!(
            triples("[client]\ncompress\n  skip ssl  \n"),
            [
                ("client".into(), "compress".into(), None),
                ("client".into(), "skip ssl".into(), None),
            ]
        );
    }

    #[test]
    fn key_with_equals_and_nothing_after_has_an_empty_value() {
        assert_eq!(value_of("password="), some(""));
        assert_eq!(value_of("password =   "), some(""));
    }

    #[test]
    fn only_the_first_equals_separates_key_and_value() {
        assert_eq!(value_of("x==y"), some("=y"));
        assert_eq!(value_of("k = = v"), some("= v"));
    }

    #[test]
    fn entries_record_file_and_line() {
        let found = entries("# c\n[client]\n\nuser=a\n");
        let entry = found.first().expect("one entry");
        assert_eq!(
            (entry.file.as_path(), entry.line),
            (Path::new("test.cnf"), 4)
        );
    }

    #[test]
    fn group_names_are_matched_case_insensitively_and_stored_lower_case() {
        let groups: Vec<String> = entries("[CLIENT]\na\n[Mysql-Snapshot]\nb\n[]\nc\n")
            .into_iter()
            .map(|e| e.group)
            .collect();
        assert_eq!(groups, ["client", "mysql-snapshot", ""]);
    }

    #[test]
    fn blanks_before_the_closing_bracket_are_not_part_of_the_group_name() {
        assert_eq!(
            entries("[client \t]\na\n")
                .first()
                .map(|e| e.group.as_str()),
            Some("client")
        );
    }

    #[test]
    fn group_header_may_be_followed_by_a_comment() {
        assert_eq!(entries("[client] # c\na\n[mysql] ; c\nb\n").len(), 2);
    }

    #[test]
    fn dash_and_underscore_are_different_in_group_names() {
        assert_eq!(
            entries("[mysql_snapshot]\na\n")
                .first()
                .map(|e| e.group.as_str()),
            Some("mysql_snapshot")
        );
    }

    #[test]
    fn missing_closing_bracket_is_an_error_on_its_line() {
        assert_error("[client]\na=1\n[mysql\nb=2\n", 3, "closing ']'");
    }

    /// Deliberate difference: the client ignores whatever follows the `]`.
    #[test]
    fn text_after_a_group_header_is_an_error() {
        assert_error("[client] user=root\n", 1, "after the ']'");
        assert_error("[cl]ient]\n", 1, "after the ']'");
    }

    /// Deliberate difference: the client silently reads `[ client]` as another group.
    #[test]
    fn blank_after_the_opening_bracket_is_an_error() {
        assert_error("[ client]\na=1\n", 1, "blank after '['");
    }

    #[test]
    fn option_before_any_group_is_an_error() {
        assert_error("# comment\n\nuser=x\n[client]\n", 3, "before any [group]");
    }

    #[test]
    fn comment_lines_start_with_hash_or_semicolon_after_optional_blanks() {
        assert!(entries("# a\n; b\n  # c\n\t; d\n[client]\n#user=x\n ;user=y\n").is_empty());
    }

    #[test]
    fn hash_after_a_value_starts_a_comment() {
        assert_eq!(value_of("user=alice # note"), some("alice"));
    }

    #[test]
    fn hash_without_a_blank_before_it_still_starts_a_comment() {
        assert_eq!(value_of("user=ali#ce"), some("ali"));
    }

    #[test]
    fn hash_after_a_bare_key_leaves_a_bare_key() {
        assert_eq!(value_of("compress # note"), None);
    }

    #[test]
    fn hash_after_a_backslash_outside_quotes_still_starts_a_comment() {
        assert_eq!(value_of(r"pass=a\#b"), some(r"a\"));
    }

    #[test]
    fn hash_after_a_quoted_value_is_part_of_the_value() {
        assert_eq!(value_of(r#"password="p#ss" # note"#), some("p#ss"));
        assert_eq!(value_of("password='p#ss'"), some("p#ss"));
    }

    #[test]
    fn semicolon_after_a_value_is_part_of_the_value() {
        assert_eq!(value_of("db=shop;x"), some("shop;x"));
        assert_eq!(value_of("db=shop ;x"), some("shop ;x"));
    }

    #[test]
    fn one_pair_of_quotes_around_the_whole_value_is_removed() {
        assert_eq!(value_of("a='single quoted'"), some("single quoted"));
        assert_eq!(
            value_of(r#"a = "  kept blanks  "  "#),
            some("  kept blanks  ")
        );
        assert_eq!(value_of(r#"a="""#), some(""));
        assert_eq!(value_of("a=''''"), some("''"));
        assert_eq!(value_of(r#"a="it's""#), some("it's"));
    }

    #[test]
    fn quotes_not_around_the_whole_value_are_kept() {
        assert_eq!(value_of(r#"a="x"y"#), some(r#""x"y"#));
        assert_eq!(value_of(r#"a="a" b "c""#), some(r#"a" b "c"#));
        assert_eq!(value_of("a=x 'y z'"), some("x 'y z'"));
    }

    #[test]
    fn quotes_in_the_key_are_kept_and_count_for_comments() {
        let found = entries("[client]\n\"a=b\"=c # x\n");
        let entry = found.first().expect("one entry");
        assert_eq!(
            (entry.key.as_str(), entry.value.as_deref()),
            ("\"a", Some("b\"=c"))
        );
    }

    /// Deliberate difference: the client reads the rest of the line as written, comment included.
    #[test]
    fn unterminated_quote_is_an_error() {
        assert_error(
            "[client]\npassword='secret # note\n",
            2,
            "unterminated ' quote",
        );
        assert_error("[client]\nuser=it's\n", 2, "unterminated ' quote");
        assert_error("[client]\nx=\"\n", 2, "unterminated \" quote");
        assert_error("[client]\npass=ab\\\"cd\n", 2, "unterminated \" quote");
    }

    #[test]
    fn escapes_are_translated_in_quoted_and_bare_values() {
        assert_eq!(value_of(r"a=1\n2\t3\r4\b5\s6"), some("1\n2\t3\r4\u{8}5 6"));
        assert_eq!(value_of(r#"a="\"\'\\""#), some(r#""'\"#));
        assert_eq!(value_of(r"a=\s\sx\s"), some("  x "));
    }

    #[test]
    fn unknown_escape_keeps_its_backslash() {
        assert_eq!(value_of(r"a=\q\x\%\é"), some(r"\q\x\%\é"));
    }

    #[test]
    fn trailing_backslash_is_kept() {
        assert_eq!(value_of(r"a=x\"), some(r"x\"));
        assert_eq!(value_of(r"a=\"), some(r"\"));
    }

    #[test]
    fn escaped_quote_inside_quotes_does_not_end_them() {
        assert_eq!(value_of(r#"a="x\"y # z""#), some(r#"x"y # z"#));
        assert_eq!(value_of(r"a='it\'s' # c"), some("it's"));
        assert_eq!(value_of(r#"a="x\\" # c"#), some(r"x\"));
    }

    #[test]
    fn password_with_every_special_character_survives_quoting() {
        let wanted = some(r#"p#a;s s"w'o\rd"#);
        assert_eq!(value_of(r#"password="p#a;s s\"w'o\\rd""#), wanted);
        assert_eq!(value_of(r#"password='p#a;s s"w\'o\\rd'"#), wanted);
    }

    #[test]
    fn dash_and_underscore_are_interchangeable_in_normalized_keys() {
        let found = entries("[client]\nDefault_Character-Set=x\n");
        let entry = found.first().expect("one entry");
        assert_eq!(entry.key, "Default_Character-Set");
        assert_eq!(entry.normalized_key(), "default-character-set");
    }

    #[test]
    fn crlf_line_endings_are_read_like_lf() {
        assert_eq!(
            triples("[client]\r\nuser=a\r\npass=\"q\"\r\nbare\r\n\r\n"),
            [
                ("client".into(), "user".into(), some("a")),
                ("client".into(), "pass".into(), some("q")),
                ("client".into(), "bare".into(), None),
            ]
        );
    }

    /// The client does not split lines on a lone CR, so old Mac files read as one line.
    #[test]
    fn lone_cr_is_not_a_line_break() {
        assert_error("[client]\ruser=a\r", 1, "after the ']'");
    }

    #[test]
    fn utf8_byte_order_mark_is_an_error_on_line_1() {
        assert_error(b"\xEF\xBB\xBF[client]\nuser=a\n", 1, "byte-order mark");
    }

    #[test]
    fn line_of_4094_bytes_is_read_whole() {
        let value = "x".repeat(MAX_LINE_BYTES - 2);
        assert_eq!(value_of(&format!("a={value}")), Some(value));
    }

    /// Deliberate difference: the client reads the pieces of a longer line as separate lines.
    #[test]
    fn line_longer_than_4094_bytes_is_an_error() {
        let text = format!("[client]\n#{}\n", "x".repeat(MAX_LINE_BYTES));
        assert_error(text, 2, "4095 bytes");
    }

    /// Deliberate difference: the client ignores the rest of the line after a NUL.
    #[test]
    fn nul_byte_is_an_error() {
        assert_error("[client]\na=x\0y\n", 2, "NUL");
    }

    #[test]
    fn non_utf8_value_is_an_error() {
        assert_error(b"[client]\nuser=caf\xE9\n", 2, "not valid UTF-8");
    }

    #[test]
    fn non_utf8_comment_is_ignored() {
        assert!(parse_bytes(b"# caf\xE9\n[client]\n; \xFF\n")
            .expect("parses")
            .is_empty());
    }

    #[test]
    fn utf8_values_are_kept() {
        assert_eq!(
            value_of("motto=naïve café 日本語 🔒"),
            some("naïve café 日本語 🔒")
        );
    }

    /// Deliberate difference: the client strips the last byte of `à` (C3 A0) as a Latin-1 blank.
    #[test]
    fn value_ending_in_a_character_whose_last_byte_is_a0_is_an_error_unless_quoted() {
        assert_error("[client]\npassword=passà\n", 2, "0xA0");
        assert_error("[client]\nkeyà=1\n", 2, "0xA0");
        assert_eq!(value_of("password='passà'"), some("passà"));
    }

    #[test]
    fn latin1_no_break_space_is_a_blank() {
        assert_eq!(
            parse_bytes(b"[client]\n\xA0# comment\na=\xA0x\xA0\n")
                .expect("parses")
                .len(),
            1
        );
    }

    /// Deliberate difference: the client produces garbage such as `--=value`.
    #[test]
    fn empty_option_name_is_an_error() {
        assert_error("[client]\n=value\n", 2, "without an option name");
        assert_error("[client]\n  = value\n", 2, "without an option name");
    }

    #[test]
    fn include_reads_the_file_in_place_and_the_includer_keeps_its_group() {
        let dir = Scratch::new("include");
        dir.write(
            "extra.cnf",
            "[mysql-snapshot]\nfrom-extra=1\n[client]\nextra=yes\n",
        );
        let main = dir.write(
            "main.cnf",
            "!include @DIR@/extra.cnf\n[mysql]\nbefore=1\n  !  include @DIR@/extra.cnf  \nafter=1\n",
        );
        let found: Vec<(String, String, PathBuf, usize)> = read(&main)
            .expect("reads")
            .into_iter()
            .map(|e| (e.group, e.key, e.file, e.line))
            .collect();
        let extra = dir.path("extra.cnf");
        assert_eq!(
            found,
            [
                (
                    "mysql-snapshot".into(),
                    "from-extra".into(),
                    extra.clone(),
                    2
                ),
                ("client".into(), "extra".into(), extra.clone(), 4),
                ("mysql".into(), "before".into(), main.clone(), 3),
                (
                    "mysql-snapshot".into(),
                    "from-extra".into(),
                    extra.clone(),
                    2
                ),
                ("client".into(), "extra".into(), extra, 4),
                ("mysql".into(), "after".into(), main, 5),
            ]
        );
    }

    #[test]
    fn included_file_starts_outside_any_group() {
        let dir = Scratch::new("include-no-group");
        dir.write("extra.cnf", "# c\nuser=x\n");
        let main = dir.write("main.cnf", "[client]\n!include @DIR@/extra.cnf\n");
        let error = read(&main).expect_err("option before group in the included file");
        assert_eq!((error.file, error.line), (dir.path("extra.cnf"), Some(2)));
    }

    /// Deliberate difference: the client reports it on stderr, then reads on as if all were well.
    #[test]
    fn error_in_an_included_file_names_that_file_and_line() {
        let dir = Scratch::new("include-broken");
        dir.write("broken.cnf", "[client]\na=1\n[oops\n");
        let main = dir.write("main.cnf", "[client]\n!include @DIR@/broken.cnf\nb=2\n");
        let error = read(&main).expect_err("broken include");
        assert_eq!(
            (error.file.clone(), error.line),
            (dir.path("broken.cnf"), Some(3))
        );
        assert!(
            error
                .to_string()
                .ends_with("broken.cnf:3: group header without a closing ']'"),
            "{error}"
        );
    }

    /// Deliberate difference: the client silently skips a missing file.
    #[test]
    fn include_of_a_missing_file_is_an_error_on_the_directive_line() {
        let dir = Scratch::new("include-missing");
        let main = dir.write("main.cnf", "[client]\n!include @DIR@/nope.cnf\n");
        let error = read(&main).expect_err("missing include");
        assert_eq!((error.file, error.line), (main, Some(2)));
        assert!(error.message.contains("nope.cnf"), "{}", error.message);
    }

    /// `#` is not special in a directive, so the file named is "extra.cnf # c".
    #[test]
    fn comment_after_an_include_path_is_part_of_the_path() {
        let dir = Scratch::new("include-comment");
        dir.write("extra.cnf", "[client]\n");
        let main = dir.write("main.cnf", "!include @DIR@/extra.cnf # c\n");
        let error = read(&main).expect_err("no file named with the comment");
        assert!(error.message.contains("extra.cnf # c"), "{}", error.message);
    }

    #[test]
    fn include_of_a_directory_is_an_error() {
        let dir = Scratch::new("include-dir-as-file");
        let main = dir.write("main.cnf", "!include @DIR@\n");
        assert!(read(&main)
            .expect_err("directory")
            .message
            .contains("use !includedir"));
    }

    #[test]
    fn include_without_a_path_is_an_error() {
        assert_error("[client]\n!include   \n", 2, "without a path");
        assert_error("!includedir", 1, "without a path");
    }

    /// Deliberate difference: the client silently skips unknown directives.
    #[test]
    fn unknown_directive_is_an_error() {
        assert_error("[client]\n!INCLUDE /etc/x.cnf\n", 2, "'!INCLUDE'");
        assert_error("!includefoo x\n", 1, "'!includefoo'");
    }

    /// Deliberate difference: the client re-reads the loop until depth 10, then warns.
    #[test]
    fn include_loop_is_an_error() {
        let dir = Scratch::new("include-loop");
        dir.write("b.cnf", "[client]\nb=1\n!include @DIR@/a.cnf\n");
        let main = dir.write("a.cnf", "[client]\na=1\n!include @DIR@/b.cnf\n");
        let error = read(&main).expect_err("loop");
        assert_eq!((error.file, error.line), (dir.path("b.cnf"), Some(3)));
        assert!(error.message.contains("include loop"), "{}", error.message);
    }

    #[test]
    fn include_depth_is_capped_at_ten() {
        let dir = Scratch::new("include-depth");
        for level in 0..=11 {
            let next = level + 1;
            dir.write(
                &format!("{level}.cnf"),
                format!("[client]\nlevel={level}\n!include @DIR@/{next}.cnf\n"),
            );
        }
        let error = read(&dir.path("0.cnf")).expect_err("too deep");
        assert_eq!((error.file, error.line), (dir.path("10.cnf"), Some(3)));
        assert!(
            error.message.contains("more than 10 files deep"),
            "{}",
            error.message
        );
    }

    #[test]
    fn includedir_reads_only_cnf_files_in_byte_order_of_their_names() {
        let dir = Scratch::new("includedir");
        for name in [
            "b.cnf",
            "A.cnf",
            "a.cnf",
            "10.cnf",
            "9.cnf",
            ".hidden.cnf",
            "_u.cnf",
            "x.CNF",
            "y.cnf~",
            "z.txt",
            "sub.cnf/inner.cnf",
        ] {
            dir.write(&format!("d/{name}"), format!("[client]\nfrom={name}\n"));
        }
        let main = dir.write("main.cnf", "[client]\n!includedir @DIR@/d/\n");
        let from: Vec<String> = read(&main)
            .expect("reads")
            .into_iter()
            .filter_map(|e| e.value)
            .collect();
        assert_eq!(
            from,
            [
                ".hidden.cnf",
                "10.cnf",
                "9.cnf",
                "A.cnf",
                "_u.cnf",
                "a.cnf",
                "b.cnf"
            ]
        );
    }

    #[test]
    fn includedir_of_a_missing_directory_is_an_error() {
        let dir = Scratch::new("includedir-missing");
        let main = dir.write("main.cnf", "[client]\n!includedir @DIR@/nope\n");
        let error = read(&main).expect_err("missing dir");
        assert_eq!((error.file, error.line), (main, Some(2)));
    }

    #[test]
    fn relative_include_is_resolved_against_the_working_directory() {
        let dir = Scratch::new("include-relative");
        dir.write("extra.cnf", "[client]\nfrom-extra\n");
        let cwd = std::env::current_dir().expect("cwd");
        let up = "../".repeat(cwd.components().count().saturating_sub(1));
        let absolute = dir.path("extra.cnf");
        let relative = format!(
            "{up}{}",
            absolute
                .to_str()
                .expect("UTF-8 path")
                .trim_start_matches('/')
        );
        let found =
            parse_str(&format!("!include {relative}\n"), &dir.path("main.cnf")).expect("reads");
        assert_eq!(found.len(), 1);
    }

    /// The client drops the last character of the path when the directive ends the file without
    /// a newline (and so reads nothing); we read the path as written.
    #[test]
    fn include_on_the_last_line_without_a_newline_uses_the_whole_path() {
        let dir = Scratch::new("include-no-newline");
        dir.write("extra.cnf", "[client]\nfrom-extra\n");
        let main = dir.write("main.cnf", "[client]\n!include @DIR@/extra.cnf");
        assert_eq!(read(&main).expect("reads").len(), 1);
    }

    #[test]
    fn missing_file_is_an_error_without_a_line() {
        let error = read(Path::new("/nonexistent/optfile/test.cnf")).expect_err("missing");
        assert_eq!(error.line, None);
        assert!(
            error
                .to_string()
                .starts_with("/nonexistent/optfile/test.cnf: cannot read"),
            "{error}"
        );
    }

    #[test]
    fn files_over_one_mebibyte_are_refused() {
        let dir = Scratch::new("big");
        let big = dir.write("big.cnf", "#\n".repeat(600_000));
        assert!(read(&big)
            .expect_err("too big")
            .message
            .contains("larger than"));
    }

    /// Deliberate difference: the client skips such a file with a warning and reads on.
    #[test]
    fn world_writable_file_is_refused() {
        let dir = Scratch::new("world-writable");
        let file = dir.write("ww.cnf", "[client]\nuser=x\n");
        set_mode(&file, 0o666);
        assert!(read(&file)
            .expect_err("world-writable")
            .message
            .contains("world-writable"));
    }

    #[test]
    fn error_display_names_file_and_line() {
        let error = OptionFileError {
            file: "/etc/x.cnf".into(),
            line: Some(7),
            message: "bad".into(),
        };
        assert_eq!(error.to_string(), "/etc/x.cnf:7: bad");
    }

    #[test]
    fn no_input_makes_the_reader_panic() {
        const PIECES: [&[u8]; 16] = [
            b"[", b"]", b"=", b"#", b";", b"'", b"\"", b"\\", b" ", b"\n", b"\r", b"\xA0", b"\xC3",
            b"client", b"a", b"\0",
        ];
        let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..20_000 {
            let mut input = Vec::new();
            for _ in 0..(seed % 24) {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let index = usize::try_from(seed >> 60).unwrap_or_default();
                input.extend_from_slice(PIECES.get(index).copied().unwrap_or_default());
            }
            let _ = parse_bytes(&input);
        }
    }
}
