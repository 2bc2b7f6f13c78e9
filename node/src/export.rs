//! Export: a project's WARC files in one directory with a CDX index, ready to upload to an
//! archive (the shape wayback machines and pywb read).
//!
//! The index is the classic 11-field CDX (` CDX N b a m s k r M S V g`): SURT key, 14-digit
//! date, original URL, MIME type, HTTP status, payload SHA-1 in base32, redirect, meta tags,
//! compressed record length and offset, file name. It lists every `response`, `revisit` and
//! `resource` record, sorted bytewise as CDX readers binary-search it; each line is the one
//! pywb's own indexer (`cdx-indexer -s`) writes for the record, SURT key included (pywb's
//! indexer also lists `metadata` records, which this index leaves out). Our WARC files hold each
//! record in its own gzip member, so a record's offset and length are its member's; a file
//! that packs several records into one member is indexed by its first record per member.
//!
//! The node side (`starling export`) lists a project's results, fetches the ones it lacks
//! with the seeding fetcher, and hands the `(digest, path)` list to [`export_results`].

use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use flate2::bufread::GzDecoder;
use sha1::{Digest as _, Sha1};
use starling_protocol::Digest;

/// Name of the index written beside the WARC files.
pub const INDEX_NAME: &str = "index.cdx";
/// The CDX header line: which fields each line holds.
pub const CDX_HEADER: &str = " CDX N b a m s k r M S V g";
/// Longest WARC or HTTP header block read from a record.
const HEAD_BYTES_MAX: usize = 64 * 1024;
/// Read buffer over a WARC file.
const READ_BUF_BYTES: usize = 256 * 1024;

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A record could not be parsed.
    #[error("{}: record at byte {offset}: {why}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The compressed offset of the record.
        offset: u64,
        /// What is wrong.
        why: &'static str,
    },
    /// A result file does not hash to its digest.
    #[error("{} does not match its digest {digest}; fetch it again", path.display())]
    DigestMismatch {
        /// The file.
        path: PathBuf,
        /// The digest it should have.
        digest: String,
    },
    /// Two inputs would land on the same name.
    #[error("two input files are both named {0}")]
    DuplicateName(String),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ExportError + '_ {
    move |source| ExportError::Io { path: path.to_owned(), source }
}

/// One CDX line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdxEntry {
    /// N: the SURT form of the URL.
    pub urlkey: String,
    /// b: `YYYYMMDDhhmmss`.
    pub timestamp: String,
    /// a: the URL as captured.
    pub url: String,
    /// m: the MIME type (`warc/revisit` for revisits, `unk` when unknown).
    pub mime: String,
    /// s: the HTTP status, or `-`.
    pub status: String,
    /// k: the payload's SHA-1 in base32, or `-`.
    pub digest: String,
    /// S: bytes of the compressed record.
    pub length: u64,
    /// V: where the compressed record starts in its file.
    pub offset: u64,
    /// g: the WARC file's name.
    pub filename: String,
}

impl fmt::Display for CdxEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {} {} {} - - {} {} {}",
            field(&self.urlkey),
            field(&self.timestamp),
            field(&self.url),
            field(&self.mime),
            field(&self.status),
            field(&self.digest),
            self.length,
            self.offset,
            field(&self.filename),
        )
    }
}

/// A CDX field: never empty, never with a space or line break.
fn field(s: &str) -> String {
    if s.is_empty() {
        return "-".to_owned();
    }
    s.replace(' ', "%20").replace(['\r', '\n'], "")
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    /// WARC files in the output directory.
    pub files: usize,
    /// Of those, hard-linked rather than copied (or already there).
    pub linked: usize,
    /// Lines in the index (records listed).
    pub records: usize,
    /// Bytes of WARC files.
    pub bytes: u64,
    /// Where the index is.
    pub index: PathBuf,
}

/// How far an export is, for a progress line: `done` of `total` files in the current
/// stage, `bytes` of them so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// What is being done.
    pub stage: Stage,
    /// Files finished in this stage.
    pub done: usize,
    /// Files in this stage.
    pub total: usize,
    /// Bytes of the finished files.
    pub bytes: u64,
}

/// The stages of writing an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Hashing each result against its digest.
    Checking,
    /// Placing each file in the output directory and indexing it.
    Writing,
}

/// Checks each result against its blake3 digest, then exports them as [`export_dir`] does.
pub fn export_results(
    results: &[(Digest, PathBuf)],
    out: &Path,
) -> Result<ExportSummary, ExportError> {
    export_results_with(results, out, &mut |_| {})
}

/// [`export_results`], telling `progress` after each file.
pub fn export_results_with(
    results: &[(Digest, PathBuf)],
    out: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<ExportSummary, ExportError> {
    let total = results.len();
    let mut bytes = 0;
    for (done, (digest, path)) in results.iter().enumerate() {
        let file = File::open(path).map_err(io_at(path))?;
        let mut h = blake3::Hasher::new();
        h.update_reader(BufReader::with_capacity(READ_BUF_BYTES, file)).map_err(io_at(path))?;
        if h.finalize().as_bytes() != digest.as_bytes() {
            return Err(ExportError::DigestMismatch {
                path: path.clone(),
                digest: digest.to_hex(),
            });
        }
        bytes += h.count();
        progress(Progress { stage: Stage::Checking, done: done + 1, total, bytes });
    }
    let files: Vec<PathBuf> = results.iter().map(|(_, p)| p.clone()).collect();
    export_dir_with(&files, out, progress)
}

/// Hard-links (or, across file systems, copies) the WARC files into `out` and writes
/// `out/index.cdx` for them. The links share storage with the results: they are never
/// written in place, only replaced by rename.
pub fn export_dir(files: &[PathBuf], out: &Path) -> Result<ExportSummary, ExportError> {
    export_dir_with(files, out, &mut |_| {})
}

/// [`export_dir`], telling `progress` after each file.
pub fn export_dir_with(
    files: &[PathBuf],
    out: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<ExportSummary, ExportError> {
    fs::create_dir_all(out).map_err(io_at(out))?;
    let mut names = std::collections::BTreeSet::new();
    let (mut linked, mut bytes) = (0, 0u64);
    let mut entries = Vec::new();
    for (done, src) in files.iter().enumerate() {
        let name = src.file_name().map(|n| n.to_string_lossy().into_owned()).ok_or_else(|| {
            ExportError::Io {
                path: src.clone(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a file name"),
            }
        })?;
        if !names.insert(name.clone()) {
            return Err(ExportError::DuplicateName(name));
        }
        let dst = out.join(&name);
        if place(src, &dst)? {
            linked += 1;
        }
        bytes += fs::metadata(&dst).map_err(io_at(&dst))?.len();
        entries.extend(index_warc(&dst, &name)?);
        progress(Progress { stage: Stage::Writing, done: done + 1, total: files.len(), bytes });
    }
    let index = out.join(INDEX_NAME);
    let records = entries.len();
    write_cdx(entries, &index)?;
    Ok(ExportSummary { files: files.len(), linked, records, bytes, index })
}

/// Puts `src` at `dst`: already there with the same size, a hard link, or a copy made under a
/// temp name and renamed. Returns whether no copy was needed.
fn place(src: &Path, dst: &Path) -> Result<bool, ExportError> {
    let src_len = fs::metadata(src).map_err(io_at(src))?.len();
    if fs::metadata(dst).is_ok_and(|m| m.len() == src_len) {
        return Ok(true);
    }
    match fs::remove_file(dst) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_at(dst)(e)),
    }
    if fs::hard_link(src, dst).is_ok() {
        return Ok(true);
    }
    let dir = dst.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_at(dir))?;
    let mut from = File::open(src).map_err(io_at(src))?;
    io::copy(&mut from, &mut tmp).map_err(io_at(dst))?;
    tmp.as_file().sync_all().map_err(io_at(dst))?;
    tmp.persist(dst).map_err(|e| io_at(dst)(e.error))?;
    Ok(false)
}

/// Writes the header and the entries sorted bytewise, under a temp name then renamed.
pub fn write_cdx(entries: Vec<CdxEntry>, path: &Path) -> Result<(), ExportError> {
    let mut lines: Vec<String> = entries.iter().map(ToString::to_string).collect();
    lines.sort_unstable();
    lines.dedup();
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_at(dir))?;
    let mut w = io::BufWriter::new(tmp);
    writeln!(w, "{CDX_HEADER}").map_err(io_at(path))?;
    for line in &lines {
        writeln!(w, "{line}").map_err(io_at(path))?;
    }
    let tmp = w.into_inner().map_err(|e| io_at(path)(e.into_error()))?;
    tmp.as_file().sync_all().map_err(io_at(path))?;
    tmp.persist(path).map_err(|e| io_at(path)(e.error))?;
    Ok(())
}

/// Counts the compressed bytes the gzip decoder takes.
struct Counting<R> {
    inner: R,
    pos: u64,
}

impl<R: BufRead> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counting<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, amt: usize) {
        self.pos += amt as u64;
        self.inner.consume(amt);
    }
}

/// The index entries of one gzipped WARC file, in file order; `filename` goes in field g.
pub fn index_warc(path: &Path, filename: &str) -> Result<Vec<CdxEntry>, ExportError> {
    let file = File::open(path).map_err(io_at(path))?;
    let mut input = Counting { inner: BufReader::with_capacity(READ_BUF_BYTES, file), pos: 0 };
    let mut entries = Vec::new();
    loop {
        let offset = input.pos;
        if input.fill_buf().map_err(io_at(path))?.is_empty() {
            return Ok(entries);
        }
        let malformed = |why| ExportError::Malformed { path: path.to_owned(), offset, why };
        if !input.fill_buf().map_err(io_at(path))?.starts_with(&[0x1f, 0x8b]) {
            return Err(malformed("not a gzip member (is the file a gzipped WARC?)"));
        }
        let mut member = BufReader::new(GzDecoder::new(&mut input));
        let record = read_record(&mut member).map_err(|e| match e {
            RecordError::Io(source) => ExportError::Io { path: path.to_owned(), source },
            RecordError::Bad(why) => malformed(why),
        })?;
        io::copy(&mut member, &mut io::sink()).map_err(|_| malformed("cannot decompress"))?;
        drop(member);
        let length = input.pos - offset;
        if let Some(r) = record {
            entries.push(CdxEntry {
                urlkey: surt(&r.url),
                timestamp: r.timestamp,
                url: r.url,
                mime: r.mime,
                status: r.status,
                digest: r.digest,
                length,
                offset,
                filename: filename.to_owned(),
            });
        }
    }
}

#[derive(Debug)]
enum RecordError {
    Io(io::Error),
    Bad(&'static str),
}

impl From<io::Error> for RecordError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// What an indexed record contributes, before its offsets are known.
#[derive(Debug)]
struct Record {
    url: String,
    timestamp: String,
    mime: String,
    status: String,
    digest: String,
}

/// Reads the record at the start of a member; `None` for a record type the index leaves out.
fn read_record(r: &mut impl BufRead) -> Result<Option<Record>, RecordError> {
    let head = read_head(r)?;
    let mut lines = head.split("\r\n");
    if !lines.next().is_some_and(|l| l.starts_with("WARC/")) {
        return Err(RecordError::Bad("no WARC version line"));
    }
    let headers: Vec<(String, &str)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim()))
        .collect();
    let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
    let kind = get("warc-type").ok_or(RecordError::Bad("no WARC-Type"))?;
    if !matches!(kind, "response" | "revisit" | "resource") {
        return Ok(None);
    }
    let url = get("warc-target-uri").ok_or(RecordError::Bad("no WARC-Target-URI"))?;
    let url = url.trim_start_matches('<').trim_end_matches('>').to_owned();
    let timestamp = cdx_timestamp(get("warc-date").ok_or(RecordError::Bad("no WARC-Date"))?);
    let block_len: u64 = get("content-length")
        .and_then(|v| v.parse().ok())
        .ok_or(RecordError::Bad("no Content-Length"))?;
    let content_type = get("content-type").unwrap_or("");
    let payload_digest =
        get("warc-payload-digest").and_then(|v| v.strip_prefix("sha1:")).map(str::to_owned);
    let mut block = r.take(block_len);
    let (mime, status, head_len) = if content_type.starts_with("application/http") {
        let http = read_head(&mut block)?;
        let (status, mime) = parse_http_head(&http);
        (mime, status, http.len() as u64)
    } else {
        (mime_of(content_type), "-".to_owned(), 0)
    };
    // As pywb's own CDX indexer writes a revisit: its status comes from the record it
    // revisits.
    let (mime, status) = if kind == "revisit" {
        ("warc/revisit".to_owned(), "-".to_owned())
    } else {
        (mime, status)
    };
    let digest = match payload_digest {
        Some(d) => d,
        None if kind == "revisit" => "-".to_owned(),
        None => {
            let mut h = Sha1::new();
            let copied = io::copy(&mut block, &mut h)?;
            if copied + head_len != block_len {
                return Err(RecordError::Bad("record shorter than its Content-Length"));
            }
            data_encoding::BASE32.encode(&h.finalize())
        }
    };
    Ok(Some(Record { url, timestamp, mime, status, digest }))
}

/// Reads through the first empty line (CRLF CRLF, or LF LF); returns the text read.
fn read_head(r: &mut impl BufRead) -> Result<String, RecordError> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        let n = r.take((HEAD_BYTES_MAX - head.len()) as u64 + 1).read_until(b'\n', &mut head)?;
        if head.len() > HEAD_BYTES_MAX {
            return Err(RecordError::Bad("header block too long"));
        }
        if n == 0 {
            break;
        }
        let line = &head[before..];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// The status and MIME type from an HTTP response head.
fn parse_http_head(head: &str) -> (String, String) {
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .filter(|s| s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or("-")
        .to_owned();
    let mime = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-type"))
        .map_or_else(|| "unk".to_owned(), |(_, v)| mime_of(v));
    (status, mime)
}

/// A Content-Type value without parameters, lowercase; `unk` when empty.
fn mime_of(content_type: &str) -> String {
    let m = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if m.is_empty() { "unk".to_owned() } else { m }
}

/// `YYYYMMDDhhmmss` from a WARC date (`2024-02-29T23:59:59Z`, fractions dropped).
fn cdx_timestamp(date: &str) -> String {
    let mut digits: String = date.chars().filter(char::is_ascii_digit).take(14).collect();
    while digits.len() < 14 {
        digits.push('0');
    }
    digits
}

/// The SURT key of a URL as pywb and `cdxj-indexer` compute it (see [`crate::crawl::surt`]).
pub fn surt(url: &str) -> String {
    crate::crawl::surt::surt(url)
}

/// The pinned warcio, installed by the tests as the e2e tests do, to read our files back.
#[cfg(test)]
#[path = "../tests/e2e/warcio.rs"]
mod warcio;

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::*;
    use crate::crawl::warc::{Capture, WarcWriter};

    fn capture(url: &str, status: &str, mime: &str, body: &[u8], secs: u64) -> Capture {
        let head = format!("HTTP/1.1 {status}\r\nContent-Type: {mime}\r\n\r\n").into_bytes();
        let mut spool = tempfile::SpooledTempFile::new(1 << 16);
        spool.write_all(body).unwrap();
        let mut block = Sha1::new();
        block.update(&head);
        block.update(body);
        Capture {
            url: url.to_owned(),
            ip: None,
            date: UNIX_EPOCH + Duration::from_secs(secs),
            request: b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            response_head: head,
            body: spool,
            body_len: body.len() as u64,
            payload_sha1: Sha1::digest(body).into(),
            block_sha1: block.finalize().into(),
            truncated: false,
        }
    }

    /// A WARC file from our writer: warcinfo, three fetches, one failure record.
    fn sample_warc(dir: &Path) -> crate::crawl::warc::Finished {
        let mut w = WarcWriter::create(dir, "t", &[("software", "test".into())], 1 << 30).unwrap();
        let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 253) as u8).collect();
        let t = 1_709_251_199; // 2024-02-29T23:59:59Z
        w.capture(capture(
            "http://www.Example.com/b?z=1&a=2",
            "200 OK",
            "text/html; charset=utf-8",
            b"<p>hi</p>",
            t,
        ))
        .unwrap();
        w.capture(capture(
            "https://example.org:443/big.bin",
            "200 OK",
            "application/octet-stream",
            &big,
            t + 1,
        ))
        .unwrap();
        w.capture(capture("http://example.com/gone", "404 Not Found", "text/plain", b"", t + 2))
            .unwrap();
        w.failure("http://example.net/x", "timed out", SystemTime::now()).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn surt_keys_are_pywbs_and_timestamps_have_fourteen_digits() {
        assert_eq!(surt("http://www.Example.com/Path?b=2&a=1#frag"), "com,example)/path?a=1&b=2");
        assert_eq!(surt("http://127.0.0.2:18080/a"), "2,0,0,127:18080)/a");
        assert_eq!(cdx_timestamp("2024-02-29T23:59:59.123Z"), "20240229235959");
    }

    #[test]
    fn cdx_lines_point_at_the_gzip_members_of_their_records() {
        let dir = tempfile::tempdir().unwrap();
        let warc = sample_warc(&dir.path().join("results"));
        let entries = index_warc(&warc.path, "f.warc.gz").unwrap();
        let urls: Vec<&str> = entries.iter().map(|e| e.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "http://www.Example.com/b?z=1&a=2",
                "https://example.org:443/big.bin",
                "http://example.com/gone"
            ]
        );
        let first = entries[0].to_string();
        let want = format!(
            "com,example)/b?a=2&z=1 20240229235959 http://www.Example.com/b?z=1&a=2 text/html 200 {} - - {} {} f.warc.gz",
            data_encoding::BASE32.encode(&Sha1::digest(b"<p>hi</p>")),
            entries[0].length,
            entries[0].offset
        );
        assert_eq!(first, want);
        assert_eq!(entries[1].mime, "application/octet-stream");
        assert_eq!(entries[2].status, "404");

        let bytes = fs::read(&warc.path).unwrap();
        for e in &entries {
            let member = &bytes[e.offset as usize..(e.offset + e.length) as usize];
            let mut text = Vec::new();
            flate2::read::GzDecoder::new(member).read_to_end(&mut text).unwrap();
            let text = String::from_utf8_lossy(&text);
            assert!(text.starts_with("WARC/1.1\r\n"), "{}", &text[..40]);
            assert!(text.contains("WARC-Type: response\r\n"));
            assert!(text.contains(&format!("WARC-Target-URI: {}\r\n", e.url)));
            assert!(text.ends_with("\r\n\r\n"));
        }
        // Members are back to back: the request record after each response starts where the
        // response's member ends.
        assert!(entries.windows(2).all(|w| w[0].offset + w[0].length < w[1].offset));
    }

    #[test]
    fn export_links_files_and_writes_a_sorted_index() {
        let dir = tempfile::tempdir().unwrap();
        let results = dir.path().join("results");
        let a = sample_warc(&results);
        let out = dir.path().join("out");
        let summary = export_results(&[(a.digest, a.path.clone())], &out).unwrap();
        assert_eq!((summary.files, summary.records, summary.bytes), (1, 3, a.size));
        assert_eq!(summary.linked, 1);
        let text = fs::read_to_string(out.join(INDEX_NAME)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], CDX_HEADER);
        assert_eq!(lines.len(), 4);
        let mut sorted = lines[1..].to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, lines[1..], "lines sorted bytewise");
        assert!(lines[1].starts_with("com,example)/b?a=2&z=1 "), "{}", lines[1]);
        assert!(lines.iter().skip(1).all(|l| l.split(' ').count() == 11), "{text}");
        let name = a.path.file_name().unwrap();
        assert_eq!(fs::read(out.join(name)).unwrap(), fs::read(&a.path).unwrap());
        // Again, watching the progress: nothing to copy, same index.
        let mut seen = Vec::new();
        let again = export_results_with(&[(a.digest, a.path.clone())], &out, &mut |p| seen.push(p))
            .unwrap();
        let at = |stage| Progress { stage, done: 1, total: 1, bytes: a.size };
        assert_eq!(seen, vec![at(Stage::Checking), at(Stage::Writing)]);
        assert_eq!(again.records, 3);
        assert_eq!(fs::read_to_string(out.join(INDEX_NAME)).unwrap(), text);

        let wrong = export_results(&[(Digest([0; 32]), a.path.clone())], &dir.path().join("o2"));
        assert!(matches!(wrong, Err(ExportError::DigestMismatch { .. })));
        let dup = export_dir(&[a.path.clone(), a.path.clone()], &dir.path().join("o3"));
        assert!(matches!(dup, Err(ExportError::DuplicateName(_))));
    }

    #[test]
    fn garbage_files_are_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.warc.gz");
        fs::write(&p, b"WARC/1.1\r\n").unwrap();
        assert!(matches!(index_warc(&p, "x"), Err(ExportError::Malformed { offset: 0, .. })));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"WARC/1.1\r\nWARC-Type: response\r\n\r\n").unwrap();
        let mut bytes = gz.finish().unwrap();
        fs::write(&p, &bytes).unwrap();
        assert!(matches!(index_warc(&p, "x"), Err(ExportError::Malformed { .. })));
        bytes.truncate(bytes.len() - 5);
        fs::write(&p, &bytes).unwrap();
        assert!(index_warc(&p, "x").is_err());
    }

    /// The text of every record (each its own gzip member) of a WARC file, in order.
    fn records_of(path: &Path) -> Vec<String> {
        let bytes = fs::read(path).unwrap();
        let mut dec = flate2::read::MultiGzDecoder::new(&bytes[..]);
        let mut text = Vec::new();
        dec.read_to_end(&mut text).unwrap();
        String::from_utf8_lossy(&text)
            .split("WARC/1.1\r\n")
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .collect()
    }

    fn header<'a>(record: &'a str, name: &str) -> Option<&'a str> {
        let head = record.split("\r\n\r\n").next().unwrap_or("");
        head.lines().find_map(|l| l.strip_prefix(&format!("{name}: ")))
    }

    /// A payload seen twice in a chunk is a revisit of the first; every record names the
    /// warcinfo; warcio checks every digest, revisits included.
    #[test]
    fn repeated_payloads_become_revisits_that_warcio_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let info = [("software", "starling/test".to_owned()), ("isPartOf", "p".to_owned())];
        let mut w = WarcWriter::create(dir.path(), "item-1", &info, 1 << 30).unwrap();
        let t = 1_709_251_199;
        let same = b"<p>the same page</p>";
        let stored = |s: crate::crawl::warc::Stored| s.label();
        let first = w.capture(capture("http://a.example/1", "200 OK", "text/html", same, t));
        assert_eq!(stored(first.unwrap()), "response");
        let again = w.capture(capture("http://a.example/2", "200 OK", "text/html", same, t + 1));
        assert_eq!(stored(again.unwrap()), "revisit");
        for i in 0..2 {
            let empty =
                capture(&format!("http://a.example/e{i}"), "404 Not Found", "text/plain", b"", t);
            assert_eq!(stored(w.capture(empty).unwrap()), "response", "empty payloads are kept");
        }
        w.failure("http://a.example/x", "timed out", SystemTime::now()).unwrap();
        w.crawl_log(
            "urn:x-starling:crawl-log:item-1",
            "url 0 ok 200 0 http://a.example/1 -\n",
            SystemTime::now(),
        )
        .unwrap();
        let done = w.finish().unwrap();

        let records = records_of(&done.path);
        let info_id = header(&records[0], "WARC-Record-ID").unwrap();
        assert_eq!(header(&records[0], "WARC-Type"), Some("warcinfo"));
        assert_eq!(header(&records[0], "WARC-Filename"), Some("item-1.warc.gz"));
        for r in &records[1..] {
            assert_eq!(header(r, "WARC-Warcinfo-ID"), Some(info_id), "{r}");
        }
        let response = records
            .iter()
            .find(|r| {
                header(r, "WARC-Target-URI") == Some("http://a.example/1")
                    && header(r, "WARC-Type") == Some("response")
            })
            .unwrap();
        let revisit = records.iter().find(|r| header(r, "WARC-Type") == Some("revisit")).unwrap();
        assert_eq!(header(revisit, "WARC-Refers-To"), header(response, "WARC-Record-ID"));
        assert_eq!(header(revisit, "WARC-Refers-To-Target-URI"), Some("http://a.example/1"));
        assert_eq!(header(revisit, "WARC-Refers-To-Date"), header(response, "WARC-Date"));
        assert_eq!(header(revisit, "WARC-Profile"), Some(crate::crawl::warc::REVISIT_PROFILE));
        assert_eq!(header(revisit, "WARC-Payload-Digest"), header(response, "WARC-Payload-Digest"));
        assert!(!revisit.contains("the same page"), "a revisit holds the head only");
        let log = records
            .iter()
            .find(|r| header(r, "Content-Type") == Some("text/plain; charset=utf-8"))
            .unwrap();
        assert_eq!(header(log, "WARC-Type"), Some("metadata"));

        let out = warcio::warcio_cli().args(["check", "-v"]).arg(&done.path).output().unwrap();
        assert!(
            out.status.success(),
            "warcio check: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let entries = index_warc(&done.path, "f").unwrap();
        let kinds: Vec<(&str, &str)> =
            entries.iter().map(|e| (e.url.as_str(), e.mime.as_str())).collect();
        assert_eq!(
            kinds,
            [
                ("http://a.example/1", "text/html"),
                ("http://a.example/2", "warc/revisit"),
                ("http://a.example/e0", "text/plain"),
                ("http://a.example/e1", "text/plain"),
            ]
        );
        assert_eq!(entries[1].digest, entries[0].digest);
        assert_eq!(entries[1].status, "-");
    }

    /// Our offsets and lengths against warcio's own reading of the same file.
    #[test]
    fn offsets_match_warcio() {
        let dir = tempfile::tempdir().unwrap();
        let warc = sample_warc(dir.path());
        let out = warcio::warcio_cli()
            .args(["index", "-f", "offset,length,warc-type,warc-target-uri"])
            .arg(&warc.path)
            .output()
            .expect("cannot run python3");
        assert!(
            out.status.success(),
            "warcio index failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ours = index_warc(&warc.path, "f").unwrap();
        let theirs: Vec<(u64, u64, String)> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["warc-type"] == "response")
            .map(|v| {
                let n = |k: &str| {
                    v[k].as_str().and_then(|s| s.parse().ok()).or_else(|| v[k].as_u64()).unwrap()
                };
                (n("offset"), n("length"), v["warc-target-uri"].as_str().unwrap().to_owned())
            })
            .collect();
        let ours: Vec<(u64, u64, String)> =
            ours.into_iter().map(|e| (e.offset, e.length, e.url)).collect();
        assert_eq!(ours, theirs);
    }
}
