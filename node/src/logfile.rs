//! `--log-file PATH`: the node's log also written to a file, rotated by size so a node that
//! runs for months untended keeps a bounded amount of log.
//!
//! When a write would take the current file over its limit, the file is renamed to `PATH.1`
//! (`PATH.1` to `PATH.2`, …, the oldest beyond [`KEEP_DEFAULT`] removed) and a fresh `PATH`
//! is opened. Rotation happens between writes, under the same lock as the writes, and the
//! tracing layer writes each event in one call, so no line is split or lost across a
//! rotation. At most `max × (keep + 1)` bytes are kept, plus one line when a single line is
//! longer than the limit.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Old files kept beside the current one (`PATH.1` … `PATH.5`).
pub const KEEP_DEFAULT: usize = 5;
/// Size at which the current file is rotated, as `--log-file-max` says it.
pub const MAX_DEFAULT: &str = "10MiB";

/// The rotation size `--log-file-max` gives: a size with units as every cap takes them
/// (`10MiB`, `512KiB`, `1GB`, bytes), and more than nothing.
pub fn parse_max(s: &str) -> Result<u64, String> {
    match starling_tui::units::parse_size(s).map_err(|e| e.to_string())? {
        0 => {
            Err(format!("{s:?}: a log file needs room for at least one line; give a size above 0"))
        }
        n => Ok(n),
    }
}

/// A log file rotated by size. Cheap to clone: clones share the file and its lock.
#[derive(Debug, Clone)]
pub struct RotatingFile {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    max: u64,
    keep: usize,
    file: File,
    len: u64,
}

impl RotatingFile {
    /// Opens (appending to) `path`, rotating at `max` bytes and keeping `keep` old files.
    pub fn open(path: &Path, max: u64, keep: usize) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let len = file.metadata()?.len();
        let inner = Inner { path: path.to_path_buf(), max: max.max(1), keep, file, len };
        Ok(Self { inner: Arc::new(Mutex::new(inner)) })
    }

    /// The name of the `n`th old file: `PATH.n`.
    pub fn old(path: &Path, n: usize) -> PathBuf {
        let mut s = path.as_os_str().to_owned();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }
}

impl Inner {
    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        if self.keep == 0 {
            fs::remove_file(&self.path).or_else(not_found_ok)?;
        } else {
            fs::remove_file(RotatingFile::old(&self.path, self.keep)).or_else(not_found_ok)?;
            for n in (1..self.keep).rev() {
                let from = RotatingFile::old(&self.path, n);
                fs::rename(&from, RotatingFile::old(&self.path, n + 1)).or_else(not_found_ok)?;
            }
            fs::rename(&self.path, RotatingFile::old(&self.path, 1))?;
        }
        self.file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.len = 0;
        Ok(())
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.len > 0 && self.len + buf.len() as u64 > self.max {
            self.rotate()?;
        }
        self.file.write_all(buf)?;
        self.len += buf.len() as u64;
        Ok(buf.len())
    }
}

fn not_found_ok(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound { Ok(()) } else { Err(e) }
}

/// The writer one log event is written through: holds the lock for the whole event.
#[derive(Debug)]
pub struct Guard<'a>(std::sync::MutexGuard<'a, Inner>);

impl Write for Guard<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.file.flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RotatingFile {
    type Writer = Guard<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        Guard(self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

impl Write for &RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner).file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_units() {
        assert_eq!(parse_max(MAX_DEFAULT).unwrap(), 10 << 20);
        assert_eq!(parse_max("5MB").unwrap(), 5_000_000);
        assert_eq!(parse_max("512 KiB").unwrap(), 512 << 10);
        assert_eq!(parse_max("4096").unwrap(), 4096);
        assert_eq!(parse_max("1.5GiB").unwrap(), 3 << 29);
        assert!(parse_max("ten").is_err());
        assert!(parse_max("10 parsecs").is_err());
        assert!(parse_max("0").unwrap_err().contains("above 0"));
    }

    fn lines_in(path: &Path) -> Vec<String> {
        fs::read_to_string(path).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    #[test]
    fn writing_past_the_limit_rotates_keeps_the_total_bounded_and_loses_no_recent_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("starling.log");
        let (max, keep) = (1_000u64, 3usize);
        let log = RotatingFile::open(&path, max, keep).unwrap();
        let total_lines = 500;
        for i in 0..total_lines {
            (&log).write_all(format!("line {i:05} of the test log\n").as_bytes()).unwrap();
        }
        // The current file and `keep` old ones, no more.
        assert!(path.exists());
        for n in 1..=keep {
            assert!(RotatingFile::old(&path, n).exists(), "{n}");
        }
        assert!(!RotatingFile::old(&path, keep + 1).exists());
        let mut total = fs::metadata(&path).unwrap().len();
        for n in 1..=keep {
            let len = fs::metadata(RotatingFile::old(&path, n)).unwrap().len();
            assert!(len <= max, "old file {n} is {len} bytes");
            total += len;
        }
        assert!(total <= max * (keep as u64 + 1), "{total}");
        // The newest line is last in the current file, and the kept files hold an unbroken
        // run of whole lines, oldest file first, up to it.
        let current = lines_in(&path);
        assert_eq!(
            current.last().unwrap(),
            &format!("line {:05} of the test log", total_lines - 1)
        );
        let mut all = Vec::new();
        for n in (1..=keep).rev() {
            all.extend(lines_in(&RotatingFile::old(&path, n)));
        }
        all.extend(current);
        let first: usize = all[0][5..10].parse().unwrap();
        for (k, line) in all.iter().enumerate() {
            assert_eq!(line, &format!("line {:05} of the test log", first + k));
        }
    }

    #[test]
    fn a_reopened_log_appends_and_rotates_by_its_size_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs").join("node.log");
        {
            let log = RotatingFile::open(&path, 100, 2).unwrap();
            (&log).write_all(&[b'a'; 80]).unwrap();
        }
        let log = RotatingFile::open(&path, 100, 2).unwrap();
        (&log).write_all(&[b'b'; 30]).unwrap();
        assert_eq!(fs::read(RotatingFile::old(&path, 1)).unwrap(), vec![b'a'; 80]);
        assert_eq!(fs::read(&path).unwrap(), vec![b'b'; 30]);
    }
}
