//! Reading and following the log files the CRI writes for each container.
//!
//! The runtime (not the container) writes these files, one line per chunk of output, as
//! `<RFC 3339 time> <stdout|stderr> <F|P>[:tags] <text>`: `F` ends a line of the program's
//! output, `P` is a piece of a longer line that continues in the next record. This is where
//! `kubectl logs` and `crictl logs` read from, and where virtshim's shim sends a VM's serial
//! console, so following it is how `virtctl local` and the tests watch a guest.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often a follower looks at the file again when nothing new was there.
const POLL: Duration = Duration::from_millis(100);

/// What can go wrong reading a log file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read container log {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Which of the container's streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One whole line of a container's output, pieces (`P` records) already joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The time of the record that completed the line, as the runtime wrote it (RFC 3339);
    /// empty for a record that was not in CRI format.
    pub time: String,
    pub stream: Stream,
    /// The text, without the line end.
    pub text: String,
}

/// One record of the file, before pieces are joined.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record<'a> {
    time: &'a str,
    stream: Stream,
    partial: bool,
    text: &'a str,
}

/// Parses one record (without its `\n`). `None` when it is not in CRI format.
fn parse_record(line: &str) -> Option<Record<'_>> {
    let mut fields = line.splitn(4, ' ');
    let time = fields.next()?;
    let stream = match fields.next()? {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        _ => return None,
    };
    // Tags are colon-separated; the first says whether the line is complete.
    let partial = match fields.next()?.split(':').next()? {
        "F" => false,
        "P" => true,
        _ => return None,
    };
    if time.is_empty() {
        return None;
    }
    Some(Record {
        time,
        stream,
        partial,
        // An empty line is written as "… F " or, by some writers, "… F".
        text: fields.next().unwrap_or(""),
    })
}

/// Joins records into lines, keeping one unfinished line per stream.
#[derive(Debug, Default)]
struct Assembler {
    pieces: HashMap<Stream, String>,
}

impl Assembler {
    fn push(&mut self, record: &str, out: &mut Vec<LogLine>) {
        let Some(record) = parse_record(record) else {
            // Not CRI format (a file written by something else): keep the text rather than
            // lose output, as a complete stdout line.
            out.push(LogLine {
                time: String::new(),
                stream: Stream::Stdout,
                text: record.to_string(),
            });
            return;
        };
        let piece = self.pieces.entry(record.stream).or_default();
        piece.push_str(record.text);
        if !record.partial {
            out.push(LogLine {
                time: record.time.to_string(),
                stream: record.stream,
                text: std::mem::take(piece),
            });
        }
    }
}

/// Every complete line of the log file at `path` as it is now.
pub fn read_log(path: impl AsRef<Path>) -> Result<Vec<LogLine>, Error> {
    LogFollower::new(path).read_new()
}

/// Follows a container's log file: each call gives the lines written since the previous one.
///
/// The file may not exist yet (the runtime creates it when the container starts), may be
/// truncated, or replaced by rotation (a new inode); the follower starts over at its beginning in
/// the latter two cases, as `kubectl logs -f` does.
#[derive(Debug)]
pub struct LogFollower {
    path: PathBuf,
    offset: u64,
    inode: Option<u64>,
    /// Bytes after the last `\n`: a record the runtime is still writing.
    unfinished: Vec<u8>,
    assembler: Assembler,
}

impl LogFollower {
    /// A follower that starts at the beginning of the file.
    pub fn new(path: impl AsRef<Path>) -> Self {
        LogFollower {
            path: path.as_ref().to_path_buf(),
            offset: 0,
            inode: None,
            unfinished: Vec::new(),
            assembler: Assembler::default(),
        }
    }

    /// The file being followed.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The complete lines written since the last call; empty when there are none (also when the
    /// file does not exist yet). Never waits.
    pub fn read_new(&mut self) -> Result<Vec<LogLine>, Error> {
        let path = self.path.clone();
        let read_error = |source| Error::Read {
            path: path.clone(),
            source,
        };
        let mut file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(read_error(e)),
        };
        let metadata = file.metadata().map_err(read_error)?;
        if self.inode != Some(metadata.ino()) || metadata.len() < self.offset {
            self.offset = 0;
            self.unfinished.clear();
            self.assembler = Assembler::default();
            self.inode = Some(metadata.ino());
        }
        file.seek(SeekFrom::Start(self.offset))
            .map_err(read_error)?;
        let mut bytes = Vec::new();
        let read = file.read_to_end(&mut bytes).map_err(read_error)?;
        self.offset += read as u64;
        self.unfinished.extend_from_slice(&bytes);

        let mut lines = Vec::new();
        let Some(last_newline) = self.unfinished.iter().rposition(|&b| b == b'\n') else {
            return Ok(lines);
        };
        let rest = self.unfinished.split_off(last_newline + 1);
        let complete = std::mem::replace(&mut self.unfinished, rest);
        // Output is arbitrary bytes; replace what is not UTF-8 rather than fail.
        for record in String::from_utf8_lossy(&complete).lines() {
            self.assembler.push(record, &mut lines);
        }
        Ok(lines)
    }

    /// Waits until at least one new line is there and gives every new line.
    pub async fn next_lines(&mut self) -> Result<Vec<LogLine>, Error> {
        loop {
            let lines = self.read_new()?;
            if !lines.is_empty() {
                return Ok(lines);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Like [`next_lines`](Self::next_lines) for callers that are not async: gives the new
    /// lines as soon as there are some, or an empty list once `timeout` has passed.
    pub fn next_lines_blocking(&mut self, timeout: Duration) -> Result<Vec<LogLine>, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.read_new()?;
            if !lines.is_empty() || Instant::now() >= deadline {
                return Ok(lines);
            }
            std::thread::sleep(POLL.min(deadline.saturating_duration_since(Instant::now())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn records_parse_and_malformed_ones_are_rejected() {
        let record = parse_record("2024-05-01T10:00:00.123456789Z stdout F hello world");
        assert_eq!(
            record,
            Some(Record {
                time: "2024-05-01T10:00:00.123456789Z",
                stream: Stream::Stdout,
                partial: false,
                text: "hello world",
            })
        );
        let record = parse_record("2024-05-01T10:00:00Z stderr P:tag  two  spaces ");
        assert_eq!(
            record.map(|r| (r.partial, r.text)),
            Some((true, " two  spaces "))
        );
        assert_eq!(
            parse_record("2024-05-01T10:00:00Z stdout F").map(|r| r.text),
            Some("")
        );
        for bad in ["", "hello", "t stdin F x", "t stdout X x", " stdout F x"] {
            assert_eq!(parse_record(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn pieces_join_per_stream_and_foreign_lines_are_kept() {
        let mut assembler = Assembler::default();
        let mut out = Vec::new();
        for record in [
            "t1 stdout P abc",
            "t2 stderr F err",
            "t3 stdout F def",
            "not a cri record",
        ] {
            assembler.push(record, &mut out);
        }
        let texts: Vec<_> = out.iter().map(|l| (l.stream, l.text.as_str())).collect();
        assert_eq!(
            texts,
            [
                (Stream::Stderr, "err"),
                (Stream::Stdout, "abcdef"),
                (Stream::Stdout, "not a cri record"),
            ]
        );
        assert_eq!(out[1].time, "t3");
    }

    #[test]
    fn follower_gives_only_new_complete_lines_and_restarts_after_truncation() {
        let dir = tempdir();
        let path = dir.join("0.log");
        let mut follower = LogFollower::new(&path);
        assert!(follower
            .read_new()
            .expect("missing file is no error")
            .is_empty());

        let mut file = File::create(&path).expect("create log");
        write!(file, "t1 stdout F one\nt2 stdout F tw").expect("write");
        let lines = follower.read_new().expect("read");
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].text, "one");

        writeln!(file, "o").expect("write");
        let lines = follower.read_new().expect("read");
        assert_eq!(
            lines.iter().map(|l| &l.text[..]).collect::<Vec<_>>(),
            ["two"]
        );
        assert!(follower.read_new().expect("read").is_empty());

        file.set_len(0).expect("truncate");
        file.seek(SeekFrom::Start(0)).expect("seek");
        writeln!(file, "t3 stderr F three").expect("write");
        let lines = follower.read_new().expect("read");
        assert_eq!(lines.len(), 1);
        assert_eq!(
            (lines[0].stream, &lines[0].text[..]),
            (Stream::Stderr, "three")
        );

        assert_eq!(read_log(&path).expect("read").len(), 1);
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn blocking_follow_times_out_empty() {
        let dir = tempdir();
        let mut follower = LogFollower::new(dir.join("never.log"));
        let lines = follower
            .next_lines_blocking(Duration::from_millis(150))
            .expect("missing file is no error");
        assert!(lines.is_empty());
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    fn tempdir() -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "virtctl-cri-log-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("make temp dir");
        dir
    }
}
