//! The WARC 1.1 writer: one file per crawl chunk, a `warcinfo` record first, then `request`
//! and `response` records per fetch (robots.txt answers included), a `metadata` record per
//! failed URL and a `metadata` record holding the chunk's crawl log, each record its own gzip
//! member (so readers can seek to any record). Every record after the warcinfo names it in
//! `WARC-Warcinfo-ID`.
//!
//! A payload already stored earlier in the same file is written as a `revisit` record
//! (identical-payload-digest profile: the HTTP head only, pointing at the first record by
//! `WARC-Refers-To`, `WARC-Refers-To-Target-URI` and `WARC-Refers-To-Date`). The scope is the
//! chunk on purpose: the mesh checks, accepts or replaces each chunk's file on its own, so a
//! revisit pointing into another chunk's file could point at a record no export holds.
//!
//! The file is written under a temporary name in the results directory, fsynced, and renamed
//! to `<blake3 hex>.warc.gz` only when whole; a crash leaves at most a `*.warc.gz.tmp` file,
//! which [`clean_temp`] removes on start. Digests follow the common `sha1:BASE32` convention.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use flate2::Compression;
use flate2::write::GzEncoder;
use sha1::{Digest as _, Sha1};
use starling_protocol::Digest;
use tempfile::SpooledTempFile;

/// Suffix of a finished WARC file.
pub const WARC_SUFFIX: &str = ".warc.gz";
/// Suffix of a WARC file being written.
pub const TEMP_SUFFIX: &str = ".warc.gz.tmp";
/// Output buffer size.
const WRITE_BUF_BYTES: usize = 64 * 1024;
/// A record with no streamed tail.
const NO_TAIL: Option<(io::Empty, u64)> = None;
/// `WARC-Profile` of a revisit whose payload is the same as an earlier record's.
pub const REVISIT_PROFILE: &str =
    "http://netpreserve.org/warc/1.1/revisit/identical-payload-digest";

/// One fetch as it will be archived: the request sent and the response received.
#[derive(Debug)]
pub struct Capture {
    /// The URL fetched.
    pub url: String,
    /// The address actually connected to.
    pub ip: Option<IpAddr>,
    /// When the request was sent.
    pub date: SystemTime,
    /// The HTTP request head as sent.
    pub request: Vec<u8>,
    /// The HTTP response head (status line and headers, ending in an empty line).
    pub response_head: Vec<u8>,
    /// The response body as received (without transfer coding).
    pub body: SpooledTempFile,
    /// Bytes in `body`.
    pub body_len: u64,
    /// sha1 of `body`.
    pub payload_sha1: [u8; 20],
    /// sha1 of `response_head` then `body`.
    pub block_sha1: [u8; 20],
    /// Whether the body was cut at the project's size cap.
    pub truncated: bool,
}

/// How a capture was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// As a `response` record.
    Response,
    /// As a `revisit` record: the payload is an earlier record's.
    Revisit,
    /// Not at all: the file is at its size cap.
    OverCap,
}

impl Stored {
    /// Its name in the crawl log.
    pub fn label(self) -> &'static str {
        match self {
            Stored::Response => "response",
            Stored::Revisit => "revisit",
            Stored::OverCap => "not-stored",
        }
    }
}

/// The first record that stored a payload, for the revisits of it.
#[derive(Debug)]
struct FirstCopy {
    record_id: String,
    url: String,
    date: String,
}

/// A finished WARC file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// blake3 of the whole file; also its name.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Where it is.
    pub path: PathBuf,
}

/// Counts and hashes what passes through to the file.
#[derive(Debug)]
struct Hashing<W> {
    inner: W,
    hasher: blake3::Hasher,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes one WARC file; dropped without [`WarcWriter::finish`], it deletes its temp file.
#[derive(Debug)]
pub struct WarcWriter {
    dir: PathBuf,
    tmp: PathBuf,
    out: Option<Hashing<BufWriter<File>>>,
    bytes_max: u64,
    /// The warcinfo record's id, named by every later record.
    warcinfo_id: String,
    /// Payloads stored so far, by sha1.
    payloads: std::collections::HashMap<[u8; 20], FirstCopy>,
}

impl WarcWriter {
    /// Starts `<dir>/<stem>.warc.gz.tmp` with a warcinfo record holding `info` fields and
    /// `WARC-Filename: <stem>.warc.gz` (the file is later stored under its digest, which it
    /// cannot contain). Records after the file passes `bytes_max` are refused.
    pub fn create(
        dir: &Path,
        stem: &str,
        info: &[(&str, String)],
        bytes_max: u64,
    ) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let tmp = dir.join(format!("{stem}{TEMP_SUFFIX}"));
        let file = File::create(&tmp)?;
        let out = Hashing {
            inner: BufWriter::with_capacity(WRITE_BUF_BYTES, file),
            hasher: blake3::Hasher::new(),
            bytes: 0,
        };
        let warcinfo_id = record_id();
        let mut w = Self {
            dir: dir.to_owned(),
            tmp,
            out: Some(out),
            bytes_max,
            warcinfo_id: warcinfo_id.clone(),
            payloads: std::collections::HashMap::new(),
        };
        let mut body = String::new();
        for (k, v) in info {
            body.push_str(&format!("{k}: {}\r\n", one_line(v)));
        }
        let headers = [
            ("WARC-Type", "warcinfo".to_owned()),
            ("WARC-Record-ID", warcinfo_id),
            ("WARC-Date", warc_date(SystemTime::now())),
            ("WARC-Filename", format!("{stem}{WARC_SUFFIX}")),
            ("WARC-Block-Digest", sha1_label(&Sha1::digest(body.as_bytes()).into())),
            ("Content-Type", "application/warc-fields".to_owned()),
        ];
        w.record(&headers, body.as_bytes(), NO_TAIL)?;
        Ok(w)
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.out.as_ref().map_or(0, |o| o.bytes)
    }

    /// Appends the request record of a fetch and its response, or a revisit when a complete
    /// payload of at least one byte is already in the file; [`Stored::OverCap`] if the file is
    /// already at its size cap and the capture was left out.
    pub fn capture(&mut self, mut c: Capture) -> io::Result<Stored> {
        if self.bytes() >= self.bytes_max {
            return Ok(Stored::OverCap);
        }
        let date = warc_date(c.date);
        let (req_id, resp_id) = (record_id(), record_id());
        let first =
            if c.truncated || c.body_len == 0 { None } else { self.payloads.get(&c.payload_sha1) };
        let stored = if first.is_some() { Stored::Revisit } else { Stored::Response };
        let mut resp = vec![
            ("WARC-Type", stored.label().to_owned()),
            ("WARC-Record-ID", resp_id.clone()),
            ("WARC-Date", date.clone()),
            ("WARC-Target-URI", c.url.clone()),
            ("WARC-Warcinfo-ID", self.warcinfo_id.clone()),
        ];
        if let Some(ip) = c.ip {
            resp.push(("WARC-IP-Address", ip.to_string()));
        }
        if let Some(first) = first {
            resp.push(("WARC-Profile", REVISIT_PROFILE.to_owned()));
            resp.push(("WARC-Refers-To", first.record_id.clone()));
            resp.push(("WARC-Refers-To-Target-URI", first.url.clone()));
            resp.push(("WARC-Refers-To-Date", first.date.clone()));
            resp.push(("WARC-Block-Digest", sha1_label(&Sha1::digest(&c.response_head).into())));
            resp.push(("WARC-Payload-Digest", sha1_label(&c.payload_sha1)));
            resp.push(("Content-Type", "application/http;msgtype=response".to_owned()));
            self.record(&resp, &c.response_head, NO_TAIL)?;
        } else {
            resp.push(("WARC-Block-Digest", sha1_label(&c.block_sha1)));
            resp.push(("WARC-Payload-Digest", sha1_label(&c.payload_sha1)));
            if c.truncated {
                resp.push(("WARC-Truncated", "length".to_owned()));
            }
            resp.push(("Content-Type", "application/http;msgtype=response".to_owned()));
            c.body.seek(SeekFrom::Start(0))?;
            let body = (&mut c.body).take(c.body_len);
            self.record(&resp, &c.response_head, Some((body, c.body_len)))?;
            if !c.truncated && c.body_len > 0 {
                let copy = FirstCopy {
                    record_id: resp_id.clone(),
                    url: c.url.clone(),
                    date: date.clone(),
                };
                self.payloads.entry(c.payload_sha1).or_insert(copy);
            }
        }

        let mut req = vec![
            ("WARC-Type", "request".to_owned()),
            ("WARC-Record-ID", req_id),
            ("WARC-Date", date),
            ("WARC-Target-URI", c.url),
            ("WARC-Warcinfo-ID", self.warcinfo_id.clone()),
            ("WARC-Concurrent-To", resp_id),
        ];
        if let Some(ip) = c.ip {
            req.push(("WARC-IP-Address", ip.to_string()));
        }
        req.push(("WARC-Block-Digest", sha1_label(&Sha1::digest(&c.request).into())));
        req.push(("Content-Type", "application/http;msgtype=request".to_owned()));
        self.record(&req, &c.request, NO_TAIL)?;
        Ok(stored)
    }

    /// Appends the chunk's crawl log (see `docs/crawling.md` for its lines) as a `metadata`
    /// record about `target`.
    pub fn crawl_log(&mut self, target: &str, log: &str, date: SystemTime) -> io::Result<()> {
        let headers = [
            ("WARC-Type", "metadata".to_owned()),
            ("WARC-Record-ID", record_id()),
            ("WARC-Date", warc_date(date)),
            ("WARC-Target-URI", uri_text(target)),
            ("WARC-Warcinfo-ID", self.warcinfo_id.clone()),
            ("WARC-Block-Digest", sha1_label(&Sha1::digest(log.as_bytes()).into())),
            ("Content-Type", "text/plain; charset=utf-8".to_owned()),
        ];
        self.record(&headers, log.as_bytes(), NO_TAIL)
    }

    /// Appends a metadata record saying why `url` has no archived response.
    pub fn failure(&mut self, url: &str, reason: &str, date: SystemTime) -> io::Result<()> {
        let body = format!("fetch-outcome: failed\r\nreason: {}\r\n", one_line(reason));
        let headers = [
            ("WARC-Type", "metadata".to_owned()),
            ("WARC-Record-ID", record_id()),
            ("WARC-Date", warc_date(date)),
            ("WARC-Target-URI", uri_text(url)),
            ("WARC-Warcinfo-ID", self.warcinfo_id.clone()),
            ("WARC-Block-Digest", sha1_label(&Sha1::digest(body.as_bytes()).into())),
            ("Content-Type", "application/warc-fields".to_owned()),
        ];
        self.record(&headers, body.as_bytes(), NO_TAIL)
    }

    /// Writes one record as its own gzip member: `head` then an optional streamed tail.
    fn record<R: Read>(
        &mut self,
        headers: &[(&str, String)],
        head: &[u8],
        tail: Option<(R, u64)>,
    ) -> io::Result<()> {
        let out = self.out.as_mut().ok_or_else(|| io::Error::other("writer finished"))?;
        let tail_len = tail.as_ref().map_or(0, |(_, n)| *n);
        let mut text = String::from("WARC/1.1\r\n");
        for (k, v) in headers {
            text.push_str(&format!("{k}: {}\r\n", one_line(v)));
        }
        text.push_str(&format!("Content-Length: {}\r\n\r\n", head.len() as u64 + tail_len));
        let mut gz = GzEncoder::new(out, Compression::default());
        gz.write_all(text.as_bytes())?;
        gz.write_all(head)?;
        if let Some((mut r, n)) = tail {
            let copied = io::copy(&mut r, &mut gz)?;
            if copied != n {
                return Err(io::Error::other("record body shorter than announced"));
            }
        }
        gz.write_all(b"\r\n\r\n")?;
        gz.finish()?;
        Ok(())
    }

    /// Flushes, fsyncs and renames the file to its digest; returns where it is.
    pub fn finish(mut self) -> io::Result<Finished> {
        let out = self.out.take().ok_or_else(|| io::Error::other("writer finished"))?;
        let Hashing { inner, hasher, bytes } = out;
        let file = inner.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        let digest = Digest(*hasher.finalize().as_bytes());
        let path = self.dir.join(format!("{}{WARC_SUFFIX}", digest.to_hex()));
        fs::rename(&self.tmp, &path)?;
        // Make the rename itself durable.
        File::open(&self.dir)?.sync_all()?;
        Ok(Finished { digest, size: bytes, path })
    }
}

impl Drop for WarcWriter {
    fn drop(&mut self) {
        if self.out.is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Removes temp files a crash left behind in `dir`; returns how many.
pub fn clean_temp(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_name().to_string_lossy().ends_with(TEMP_SUFFIX) {
            fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Removes the finished results `digests` from `dir`, with their outboard trees: results of
/// claims the mesh refused, or replaced by another result. Returns (files, bytes) removed.
pub fn remove_results(dir: &Path, digests: &[starling_protocol::Digest]) -> io::Result<(u64, u64)> {
    let (mut files, mut bytes) = (0u64, 0u64);
    for d in digests {
        let path = dir.join(format!("{}{WARC_SUFFIX}", d.to_hex()));
        let size = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        fs::remove_file(&path)?;
        let tree = dir.join(format!("{}{}", d.to_hex(), crate::seed::store::OUTBOARD_SUFFIX));
        let _ = fs::remove_file(tree);
        files += 1;
        bytes = bytes.saturating_add(size);
    }
    Ok((files, bytes))
}

/// Total size of finished WARC files in `dir`.
pub fn stored_bytes(dir: &Path) -> io::Result<u64> {
    stored_files(dir).map(|(_, bytes)| bytes)
}

/// How many finished WARC files `dir` holds, and their total size.
pub fn stored_files(dir: &Path) -> io::Result<(u64, u64)> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(e),
    };
    let (mut files, mut total) = (0u64, 0u64);
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(WARC_SUFFIX) {
            files += 1;
            total = total.saturating_add(entry.metadata()?.len());
        }
    }
    Ok((files, total))
}

/// `sha1:` and the digest in base32, as WARC tools write it.
pub fn sha1_label(digest: &[u8; 20]) -> String {
    format!("sha1:{}", data_encoding::BASE32.encode(digest))
}

/// A fresh `<urn:uuid:…>` (version 4).
fn record_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // No OS randomness: fall back to a hash of the time, still unique per call in practice.
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let h = blake3::hash(&now.as_nanos().to_le_bytes());
        b.copy_from_slice(&h.as_bytes()[..16]);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("<urn:uuid:{}-{}-{}-{}-{}>", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// `YYYY-MM-DDThh:mm:ssZ` in UTC.
pub fn warc_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = crate::civil::civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The HTTP status in a response head's first line, or `-`.
pub fn head_status(head: &[u8]) -> String {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    String::from_utf8_lossy(line)
        .split_whitespace()
        .nth(1)
        .filter(|s| s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or("-")
        .to_owned()
}

/// A target URI as a header value: bytes outside visible ASCII percent-encoded (a chunk may
/// hold a URL that never parsed).
pub fn uri_text(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    for b in url.bytes() {
        if b.is_ascii_graphic() {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A header value on one line (CR and LF would end the header early).
pub fn one_line(v: &str) -> String {
    v.replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn dates_format_as_warc_wants() {
        assert_eq!(warc_date(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_251_199); // 2024-02-29T23:59:59Z
        assert_eq!(warc_date(t), "2024-02-29T23:59:59Z");
    }

    #[test]
    fn target_uris_are_percent_encoded() {
        assert_eq!(uri_text("not a url\r\n"), "not%20a%20url%0D%0A");
        assert_eq!(uri_text("http://a/b?c=d"), "http://a/b?c=d");
    }

    #[test]
    fn record_ids_are_uuid_v4() {
        let id = record_id();
        assert_eq!(id.len(), "<urn:uuid:>".len() + 36);
        assert_eq!(&id[24..25], "4");
        assert_ne!(id, record_id());
    }

    #[test]
    fn sha1_labels_use_base32() {
        let d: [u8; 20] = Sha1::digest(b"").into();
        assert_eq!(sha1_label(&d), "sha1:3I42H3S6NNFQ2MSVX7XZKYAYSCX5QBYJ");
    }

    #[test]
    fn a_dropped_writer_leaves_nothing_and_a_finished_one_is_named_by_digest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = WarcWriter::create(dir.path(), "a", &[("software", "t".into())], 1 << 20)
            .expect("create");
        assert!(dir.path().join("a.warc.gz.tmp").exists());
        drop(w);
        assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 0);

        let mut w = WarcWriter::create(dir.path(), "b", &[], 1 << 20).expect("create");
        w.failure("http://x/", "timed out\r\nInjected: yes", SystemTime::now()).expect("write");
        let done = w.finish().expect("finish");
        let bytes = fs::read(&done.path).expect("read");
        assert_eq!(Digest::of(&bytes), done.digest);
        assert_eq!(bytes.len() as u64, done.size);
        assert_eq!(stored_bytes(dir.path()).expect("size"), done.size);
        assert!(!dir.path().join("b.warc.gz.tmp").exists());

        fs::write(dir.path().join("c.warc.gz.tmp"), b"half").expect("write");
        assert_eq!(clean_temp(dir.path()).expect("clean"), 1);
        assert!(done.path.exists());
    }

    #[test]
    fn refused_results_are_removed_with_their_trees_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kept = starling_protocol::Digest([1; 32]);
        let refused = starling_protocol::Digest([2; 32]);
        for d in [kept, refused] {
            fs::write(dir.path().join(format!("{}{WARC_SUFFIX}", d.to_hex())), b"warc").unwrap();
            fs::write(dir.path().join(format!("{}.obao", d.to_hex())), b"tree").unwrap();
        }
        let gone = starling_protocol::Digest([3; 32]);
        assert_eq!(remove_results(dir.path(), &[refused, gone]).unwrap(), (1, 4));
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let k = kept.to_hex();
        assert_eq!(left, [format!("{k}.obao"), format!("{k}{WARC_SUFFIX}")]);
    }
}
