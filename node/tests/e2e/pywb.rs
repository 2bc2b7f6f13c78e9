//! An export replayed by pywb, the wayback machine archives run, which nobody here wrote: a
//! local site is crawled, the chunk exported with its `index.cdx`, and pywb (installed by the
//! test, pinned) serves a collection whose index is that very file and whose archive is the
//! export's folder. Every page fetched through replay in its raw (`id_`) mode must be the
//! site's bytes exactly: that needs our SURT keys to be pywb's (an IP host with a port, path
//! case, query order), our offsets and lengths to be right, and pywb to resolve the revisit
//! record of a repeated payload to the first copy.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use starling_node::crawl::{ChunkRequest, Crawler, CrawlerConfig, Outcome};
use starling_protocol::{
    ItemId, Keypair, NodeId, ProjectManifest, RatePolicy, RobotsPolicy, SizeCaps,
};

use crate::warcio::{pywb_cdx_indexer, pywb_wayback, warcio_cli};

/// The site's address (its own, so no other test's site shares it).
const SITE_IP: &str = "127.0.0.71";
/// pywb's address.
const PYWB_IP: &str = "127.0.0.72";
/// How long pywb may take to install (first run) is not counted here; this bounds its start.
const PYWB_START: Duration = Duration::from_secs(120);

/// A page of the site: status, content type, body.
type Page = (StatusCode, &'static str, Vec<u8>);

fn pages() -> BTreeMap<String, Page> {
    let html = |s: &str| (StatusCode::OK, "text/html; charset=utf-8", s.as_bytes().to_vec());
    let binary: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 256) as u8).collect();
    let twin = "<html><body>the same bytes twice</body></html>";
    BTreeMap::from([
        (
            "/robots.txt".into(),
            (StatusCode::OK, "text/plain", b"User-agent: *\nDisallow: /private\n".to_vec()),
        ),
        ("/page/a".into(), html("<html><body>page a</body></html>")),
        ("/page/b?z=1&a=2".into(), html("<html><body>page b with a query</body></html>")),
        ("/Upper/Case.html".into(), html("<html><body>Case</body></html>")),
        ("/dup/1".into(), html(twin)),
        ("/dup/2".into(), html(twin)),
        ("/bin".into(), (StatusCode::OK, "application/octet-stream", binary)),
        ("/gone".into(), (StatusCode::NOT_FOUND, "text/plain", b"no such page".to_vec())),
    ])
}

async fn serve(State(pages): State<Arc<BTreeMap<String, Page>>>, uri: Uri) -> Response {
    let key = uri.path_and_query().map_or("/", |p| p.as_str());
    match pages.get(key) {
        Some((status, mime, body)) => {
            (*status, [(header::CONTENT_TYPE, *mime)], body.clone()).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn manifest() -> ProjectManifest {
    ProjectManifest {
        name: "replay".into(),
        description: String::new(),
        version: 1,
        owner: Keypair::from_secret([7; 32]).public(),
        rate: RatePolicy {
            per_s_milli: 50_000,
            burst: 10,
            concurrency: 4,
            ..RatePolicy::default()
        },
        lease_ms: 60_000,
        replication: 0,
        scope: Vec::new(),
        user_agent: "StarlingTest/1.0".into(),
        robots: RobotsPolicy::Obey,
        caps: SizeCaps {
            response_bytes_max: 1 << 20,
            chunk_urls_max: 100,
            result_bytes_max: 64 << 20,
        },
        verify: Default::default(),
        shard_depth: 0,
    }
}

/// pywb's wayback server, killed and reaped when dropped.
struct Wayback(Child);

impl Drop for Wayback {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port free on `ip` now (pywb binds it a moment later; nothing else uses this address).
fn free_port(ip: &str) -> u16 {
    let l = std::net::TcpListener::bind((ip, 0)).expect("bind on 127/8");
    l.local_addr().expect("addr").port()
}

/// Starts pywb in `dir` with one collection, `export`, over the export's own index and files.
fn start_pywb(dir: &Path, export: &Path, port: u16) -> Wayback {
    let config = format!(
        "collections:\n  export:\n    index: {}\n    archive_paths: {}/\n",
        export.join(starling_node::export::INDEX_NAME).display(),
        export.display()
    );
    std::fs::write(dir.join("config.yaml"), config).expect("write config.yaml");
    let log = std::fs::File::create(dir.join("pywb.log")).expect("log file");
    let child = pywb_wayback()
        .args(["-b", PYWB_IP, "-p", &port.to_string(), "-t", "2"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .expect("cannot run python3");
    Wayback(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pywb_replays_an_export_byte_for_byte_from_its_own_index() {
    // Install pywb (and warcio) before anything is timed: the first run downloads them.
    let installer = tokio::task::spawn_blocking(|| {
        drop(pywb_wayback());
        drop(warcio_cli());
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let pages = Arc::new(pages());
    let listener = tokio::net::TcpListener::bind((SITE_IP, 0)).await.expect("bind on 127/8");
    let site = listener.local_addr().expect("addr");
    let app = Router::new().fallback(serve).with_state(pages.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let mut config = CrawlerConfig::new(dir.path().join("results"), NodeId([9; 32]));
    config.allow_private_targets = true;
    config.operator_note = Some("replay test, nobody to call".into());
    let crawler = Crawler::new(config).expect("crawler");
    let m = manifest();
    let urls: Vec<String> =
        pages.keys().filter(|p| *p != "/robots.txt").map(|p| format!("http://{site}{p}")).collect();
    let item = ItemId(*blake3::hash(b"replay").as_bytes());
    let req =
        ChunkRequest { item, epoch: 1, project: m.id(), manifest: &m, urls: &urls, checks: None };
    let result = crawler.crawl_chunk(req).await.expect("crawl");
    for o in &result.outcomes {
        assert!(matches!(o.outcome, Outcome::Ok { .. }), "{o:?}");
    }
    let out = dir.path().join("export");
    starling_node::export::export_results(&[(result.digest, result.path.clone())], &out)
        .expect("export");
    installer.await.expect("install pywb");

    // The index pywb will use, read as pywb reads it: key, timestamp, original URL.
    let index = std::fs::read_to_string(out.join(starling_node::export::INDEX_NAME)).expect("cdx");
    let mut captured: HashMap<String, (String, String)> = HashMap::new();
    for line in index.lines().skip(1) {
        let f: Vec<&str> = line.split(' ').collect();
        captured.insert(f[2].to_owned(), (f[0].to_owned(), f[1].to_owned()));
    }
    let port = site.port();
    let key = |p: &str| captured[&format!("http://{site}{p}")].0.clone();
    assert_eq!(key("/page/b?z=1&a=2"), format!("71,0,0,127:{port})/page/b?a=2&z=1"));
    assert_eq!(key("/Upper/Case.html"), format!("71,0,0,127:{port})/upper/case.html"));
    assert_eq!(key("/robots.txt"), format!("71,0,0,127:{port})/robots.txt"), "robots.txt archived");
    assert!(index.contains(" warc/revisit "), "the repeated payload is a revisit:\n{index}");

    // Every line is the one pywb's own indexer writes for the record (it lists the crawl log's
    // metadata record too, which ours leaves out).
    let theirs = pywb_cdx_indexer()
        .args(["-s", "-o", "theirs.cdx"])
        .arg(result.path.file_name().expect("name"))
        .current_dir(&out)
        .output()
        .expect("cannot run python3");
    assert!(
        theirs.status.success(),
        "pywb cdx-indexer: {}",
        String::from_utf8_lossy(&theirs.stderr)
    );
    let theirs = std::fs::read_to_string(out.join("theirs.cdx")).expect("their index");
    std::fs::remove_file(out.join("theirs.cdx")).expect("rm");
    for line in index.lines() {
        assert!(theirs.lines().any(|l| l == line), "{line}\nis not in pywb's index:\n{theirs}");
    }

    // The file's records as warcio reads them: the warcinfo names the project and the operator.
    let info = warcio_cli().args(["extract", "--payload"]).arg(&result.path).arg("0").output();
    let info = String::from_utf8_lossy(&info.expect("warcio").stdout).into_owned();
    assert!(info.contains("isPartOf: replay (starling project "), "{info}");
    assert!(info.contains("operator: replay test, nobody to call"), "{info}");
    assert!(info.contains("software: starling/"), "{info}");

    // The crawl log closes the file: a line per stored fetch, robots.txt and the revisit
    // included, and a line per chunk URL.
    let text = {
        use std::io::Read;
        let bytes = std::fs::read(&result.path).expect("read warc");
        let mut text = Vec::new();
        flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_end(&mut text).expect("gunzip");
        String::from_utf8_lossy(&text).into_owned()
    };
    let log = text.rsplit("WARC/1.1\r\n").next().expect("last record");
    assert!(log.contains("WARC-Target-URI: urn:x-starling:crawl-log:"), "{log}");
    let lines: Vec<&str> =
        log.lines().filter(|l| l.starts_with("fetch ") || l.starts_with("url ")).collect();
    let fetch_for = |path: &str| {
        let url = format!("http://{site}{path}");
        lines
            .iter()
            .find(|l| l.starts_with("fetch ") && l.ends_with(&url))
            .copied()
            .unwrap_or_default()
    };
    assert!(fetch_for("/robots.txt").contains(" response robots "), "{lines:?}");
    // The twins are fetched at once: whichever is stored first is the response, the other a
    // revisit of it.
    let twins = [fetch_for("/dup/1"), fetch_for("/dup/2")];
    let revisits = twins.iter().filter(|l| l.contains(" revisit url:")).count();
    let responses = twins.iter().filter(|l| l.contains(" response url:")).count();
    assert_eq!((revisits, responses), (1, 1), "{lines:?}");
    assert!(
        fetch_for("/gone").starts_with("fetch ") && fetch_for("/gone").contains(" 404 12 "),
        "{lines:?}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("url ") && l.contains(" ok ")).count(),
        urls.len()
    );

    let pywb_dir = dir.path().join("pywb");
    std::fs::create_dir_all(&pywb_dir).expect("mkdir");
    let pywb_port = free_port(PYWB_IP);
    let mut wayback = start_pywb(&pywb_dir, &out, pywb_port);
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let base = format!("http://{PYWB_IP}:{pywb_port}");
    let started = Instant::now();
    loop {
        if client.get(format!("{base}/")).send().await.is_ok() {
            break;
        }
        let log = || std::fs::read_to_string(pywb_dir.join("pywb.log")).unwrap_or_default();
        if let Some(status) = wayback.0.try_wait().expect("wait") {
            panic!("pywb exited ({status}) before it answered:\n{}", log());
        }
        assert!(
            started.elapsed() < PYWB_START,
            "pywb did not answer in {PYWB_START:?}:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    for (path, (status, _, body)) in pages.iter() {
        let url = format!("http://{site}{path}");
        let (_, timestamp) = &captured[&url];
        let replay = format!("{base}/export/{timestamp}id_/{url}");
        let resp = client.get(&replay).send().await.expect("replay");
        let got_status = resp.status();
        let got = resp.bytes().await.expect("body");
        assert_eq!(
            got_status.as_u16(),
            status.as_u16(),
            "{replay}: {}",
            String::from_utf8_lossy(&got)
        );
        assert!(
            got[..] == body[..],
            "{replay}: {} bytes differ from the site's {}",
            got.len(),
            body.len()
        );
    }
}
