//! Shared harness for the multi-process node tests: spawns real `starling up` processes on
//! 127.0.0.1 with their own temp data dirs and short timers, talks to their control APIs, and
//! signs test projects with the protocol types.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use starling_node::api_client::ApiClient;
use starling_protocol::manifest::VerifyPolicy;
use starling_protocol::{
    ItemBatch, Keypair, ProjectId, ProjectManifest, RatePolicy, RobotsPolicy, Signed, SizeCaps,
    WorkItem,
};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_starling");

/// A running node.
pub struct Node {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub api: ApiClient,
    pub extra: Vec<String>,
    pub env: Vec<(String, String)>,
    _tmp: Option<tempfile::TempDir>,
}

/// Short timers so the suite stays quick.
pub fn fast_args() -> Vec<String> {
    [
        "--mdns",
        "false",
        "--api-port",
        "0",
        "--presence-interval-ms",
        "500",
        "--presence-ttl-ms",
        "3000",
        "--warmup-ms",
        "800",
        "--settle-ms",
        "100",
        "--claim-settle-ms",
        "500",
        "--skew-margin-ms",
        "200",
        "--widen-ms",
        "1000",
        "--sync-interval-ms",
        "1000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn spawn_child(dir: &Path, extra: &[String], env: &[(String, String)]) -> Child {
    spawn_child_in(None, dir, dir, extra, env)
}

/// Spawns `starling up --data-dir data_dir_arg` in `cwd` (the test's own by default); `dir`
/// is where that data dir is, for the log.
fn spawn_child_in(
    cwd: Option<&Path>,
    data_dir_arg: &Path,
    dir: &Path,
    extra: &[String],
    env: &[(String, String)],
) -> Child {
    std::fs::create_dir_all(dir).unwrap();
    let log =
        std::fs::OpenOptions::new().create(true).append(true).open(dir.join("node.log")).unwrap();
    let mut cmd = Command::new(BIN);
    if let Some(cwd) = cwd {
        cmd.current_dir(cwd);
    }
    // A flag in `extra` replaces the fast timer of the same name.
    let fast = fast_args();
    let fast = fast.chunks(2).filter(|pair| !extra.contains(&pair[0])).flatten();
    cmd.arg("up").arg("--data-dir").arg(data_dir_arg).args(fast).args(extra);
    // Nothing inherited switches the test runner on; only what the test asks for does.
    cmd.env_remove("STARLING_CONFIG").env_remove("STARLING_TEST_RUNNER_DELAY_MS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.env("STARLING_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    cmd.spawn().expect("spawn starling")
}

fn wait_api(dir: &Path, child: &mut Child) -> ApiClient {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("node exited early ({status}); log:\n{}", read_log(dir));
        }
        if let Ok(api) = ApiClient::from_data_dir(dir)
            && api.get_json::<Value>("/status").is_ok()
        {
            return api;
        }
        assert!(Instant::now() < deadline, "node API never came up; log:\n{}", read_log(dir));
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn read_log(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

impl Node {
    /// Starts a node with the test runner (work takes `delay_ms`).
    pub fn start(delay_ms: u64, extra: &[String]) -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let env = vec![("STARLING_TEST_RUNNER_DELAY_MS".to_string(), delay_ms.to_string())];
        let mut child = spawn_child(&dir, extra, &env);
        let api = wait_api(&dir, &mut child);
        Node { child: Some(child), dir, api, extra: extra.to_vec(), env, _tmp: Some(tmp) }
    }

    /// Starts a node with the test runner under node key `key` (written to its data dir
    /// first), for tests that need to know which shard a node lands in.
    pub fn start_keyed(delay_ms: u64, key: &Keypair, extra: &[String]) -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        starling_node::keyfile::write_new(&dir.join(starling_node::cli_node::KEY_FILE), key)
            .unwrap();
        let env = vec![("STARLING_TEST_RUNNER_DELAY_MS".to_string(), delay_ms.to_string())];
        let mut child = spawn_child(&dir, extra, &env);
        let api = wait_api(&dir, &mut child);
        Node { child: Some(child), dir, api, extra: extra.to_vec(), env, _tmp: Some(tmp) }
    }

    /// Starts a node with the test runner and extra environment variables.
    pub fn start_env(delay_ms: u64, extra: &[String], env: &[(&str, &str)]) -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut env: Vec<(String, String)> =
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        env.push(("STARLING_TEST_RUNNER_DELAY_MS".to_string(), delay_ms.to_string()));
        let mut child = spawn_child(&dir, extra, &env);
        let api = wait_api(&dir, &mut child);
        Node { child: Some(child), dir, api, extra: extra.to_vec(), env, _tmp: Some(tmp) }
    }

    /// Starts a node with the real runners of the binary (the crawler), no test runner.
    #[allow(dead_code)]
    pub fn start_real(extra: &[String]) -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut child = spawn_child(&dir, extra, &[]);
        let api = wait_api(&dir, &mut child);
        Node { child: Some(child), dir, api, extra: extra.to_vec(), env: vec![], _tmp: Some(tmp) }
    }

    /// Starts a node with the real runners and extra environment variables.
    #[allow(dead_code)]
    pub fn start_real_env(extra: &[String], env: &[(&str, &str)]) -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let env: Vec<(String, String)> =
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut child = spawn_child(&dir, extra, &env);
        let api = wait_api(&dir, &mut child);
        Node { child: Some(child), dir, api, extra: extra.to_vec(), env, _tmp: Some(tmp) }
    }

    /// Starts a node with the real runners in `cwd`, its data dir given as `data_dir` (which may
    /// be relative to `cwd`); the caller keeps `cwd` alive.
    pub fn start_real_in(cwd: &Path, data_dir: &str, extra: &[String]) -> Node {
        let dir = cwd.join(data_dir);
        let mut child = spawn_child_in(Some(cwd), Path::new(data_dir), &dir, extra, &[]);
        let api = wait_api(&dir, &mut child);
        Node { child: Some(child), dir, api, extra: extra.to_vec(), env: vec![], _tmp: None }
    }

    /// Restarts a stopped node on the same data dir.
    pub fn restart(&mut self) {
        let _ = std::fs::remove_file(self.dir.join("api-port"));
        let mut child = spawn_child(&self.dir, &self.extra, &self.env);
        self.api = wait_api(&self.dir, &mut child);
        self.child = Some(child);
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for the exit.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return c.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn status(&self) -> Value {
        self.api.get_json("/status").expect("status")
    }

    pub fn items(&self) -> Vec<Value> {
        self.api.get_json::<Vec<Value>>("/items").expect("items")
    }

    /// A dialable address of this node, with its peer id.
    pub fn addr(&self) -> String {
        let s = self.status();
        let listen = s["listen"].as_array().unwrap();
        let tcp = listen
            .iter()
            .filter_map(|a| a.as_str())
            .find(|a| a.contains("/tcp/"))
            .expect("tcp listen addr");
        format!("{tcp}/p2p/{}", s["peer_id"].as_str().unwrap())
    }

    pub fn publish(&self, bytes: &[u8]) -> Value {
        self.api.post_json("/publish", bytes).expect("publish")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `cond` every 200 ms until it holds or `limit` passes; panics with `what` otherwise.
pub fn wait_for(what: &str, limit: Duration, cond: impl FnMut() -> bool) {
    wait_for_or(what, limit, cond, String::new);
}

/// As [`wait_for`], printing `diag()` when it times out.
pub fn wait_for_or(
    what: &str,
    limit: Duration,
    mut cond: impl FnMut() -> bool,
    diag: impl Fn() -> String,
) {
    let deadline = Instant::now() + limit;
    while !cond() {
        if Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for {what}\n{}", diag());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every node's status and log tail, for a failure message.
pub fn dump(nodes: &[Node]) -> String {
    let mut out = String::new();
    for (i, n) in nodes.iter().enumerate() {
        let s = n
            .api
            .get_json::<Value>("/status")
            .map(|v| v.to_string())
            .unwrap_or_else(|e| e.to_string());
        out.push_str(&format!(
            "--- node {i} status: {s}\n--- node {i} log:\n{}\n",
            read_log(&n.dir)
        ));
    }
    out
}

/// A signed test project: manifest bytes, batch bytes, project id.
pub struct TestProject {
    pub owner: Keypair,
    pub id: ProjectId,
    pub manifest: Vec<u8>,
    pub batch: Vec<u8>,
}

/// Arguments of a node on loopback that trusts `p`'s owner.
pub fn trusted(p: &TestProject) -> Vec<String> {
    vec![
        "--listen".into(),
        "/ip4/127.0.0.1/tcp/0".into(),
        "--trust".into(),
        p.owner.public().to_hex(),
    ]
}

pub fn project(owner_seed: u64, name: &str, items: usize, lease_ms: u64) -> TestProject {
    project_split(owner_seed, name, items, lease_ms, 0)
}

/// [`project`] with its owner splitting it into `2^shard_depth` shards.
pub fn project_split(
    owner_seed: u64,
    name: &str,
    items: usize,
    lease_ms: u64,
    shard_depth: u8,
) -> TestProject {
    let owner = starling_protocol::engine::test_keypair(owner_seed);
    let m = ProjectManifest { shard_depth, ..test_manifest(&owner, name, lease_ms) };
    let urls = (0..items).map(|i| format!("http://127.0.0.1:9/{name}/{i}")).collect();
    project_of(owner, m, urls)
}

/// A project of one-URL chunks, one per URL given.
pub fn project_with(owner_seed: u64, name: &str, urls: Vec<String>, lease_ms: u64) -> TestProject {
    let owner = starling_protocol::engine::test_keypair(owner_seed);
    let m = test_manifest(&owner, name, lease_ms);
    project_of(owner, m, urls)
}

/// The manifest of the tests' projects: no checks, no copies, whole.
fn test_manifest(owner: &Keypair, name: &str, lease_ms: u64) -> ProjectManifest {
    ProjectManifest {
        name: name.into(),
        description: "node test".into(),
        version: 1,
        owner: owner.public(),
        rate: RatePolicy::default(),
        lease_ms,
        replication: 0,
        scope: vec![],
        user_agent: "starling-test".into(),
        robots: RobotsPolicy::default(),
        caps: SizeCaps::default(),
        verify: no_checks(),
        shard_depth: 0,
    }
}

/// The spot-check policy of the tests that count items: nothing sampled, since each check is
/// an item too and would run `items.done` past the chunks (as seed duties would, which these
/// tests leave out with replication 0). `verify.rs` tests the checks.
pub fn no_checks() -> VerifyPolicy {
    VerifyPolicy { sample_milli: 0, ..VerifyPolicy::default() }
}

/// Waits until every node sees all the others, then publishes a project's signed manifest
/// and batch through the first.
pub fn meet_and_publish(nodes: &[Node], manifest: &[u8], batch: &[u8]) {
    let others = nodes.len() as u64 - 1;
    wait_for_or(
        &format!("{} nodes to see each other", nodes.len()),
        Duration::from_secs(60),
        || nodes.iter().all(|n| num(&n.status(), &["live_peers"]) == others),
        || dump(nodes),
    );
    assert_eq!(nodes[0].publish(manifest)["outcome"], "applied");
    assert_eq!(nodes[0].publish(batch)["outcome"], "applied");
}

/// A manifest for a crawl of loopback sites by the tests: scope 127.0.0.1, robots ignored,
/// default size caps, and the name in its description and user agent.
pub fn loopback_manifest(
    owner: &Keypair,
    name: &str,
    rate: RatePolicy,
    lease_ms: u64,
    replication: u8,
    verify: VerifyPolicy,
) -> ProjectManifest {
    ProjectManifest {
        name: name.into(),
        description: format!("{name} test run"),
        version: 1,
        owner: owner.public(),
        rate,
        lease_ms,
        replication,
        scope: vec!["127.0.0.1".into()],
        user_agent: format!("starling-{name}-test"),
        robots: RobotsPolicy::Ignore,
        caps: SizeCaps::default(),
        verify,
        shard_depth: 0,
    }
}

fn project_of(owner: Keypair, m: ProjectManifest, urls: Vec<String>) -> TestProject {
    let id = m.id();
    let work = urls.into_iter().map(|u| WorkItem::CrawlChunk { urls: vec![u] }).collect();
    let batch = ItemBatch { project: id, seq: 1, items: work };
    let manifest = starling_protocol::Envelope::Manifest(Signed::sign(&owner, &m)).to_bytes();
    let batch = starling_protocol::Envelope::Batch(Signed::sign(&owner, &batch)).to_bytes();
    TestProject { owner, id, manifest, batch }
}

pub fn num(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_u64().unwrap_or(0)
}

/// (id, state, epoch, holder, result) of every item, for agreement checks.
pub fn item_states(node: &Node) -> Vec<(String, String, u64, String, String)> {
    let mut v: Vec<_> = node
        .items()
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap_or("").to_string(),
                i["state"].as_str().unwrap_or("").to_string(),
                i["epoch"].as_u64().unwrap_or(0),
                i["holder"].as_str().unwrap_or("").to_string(),
                i["result"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Arguments for a real node on 127.0.0.1 that trusts `owner` and may crawl loopback sites.
pub fn crawl_node_args(owner: &starling_protocol::Keypair) -> Vec<String> {
    vec![
        "--listen".to_string(),
        "/ip4/127.0.0.1/tcp/0".into(),
        "--trust".into(),
        owner.public().to_hex(),
        "--allow-private-targets".into(),
        "true".into(),
    ]
}

/// Serves `app` on 127.0.0.1, a port of its own, from a thread of its own for as long as the
/// test process runs; returns its address once it listens.
pub fn serve_local(app: axum::Router) -> std::net::SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let _ = axum::serve(listener, app).await;
        });
    });
    rx.recv().unwrap()
}

/// Manifest `m` signed by `owner` with one batch of `chunks` crawl chunks of `per_chunk` pages
/// `http://{site}/page/N` each (N counting up from 0), as file bytes, and the project id.
pub fn page_chunks_project(
    owner: &starling_protocol::Keypair,
    m: &starling_protocol::ProjectManifest,
    site: std::net::SocketAddr,
    chunks: usize,
    per_chunk: usize,
) -> (Vec<u8>, Vec<u8>, starling_protocol::ProjectId) {
    use starling_protocol::{Envelope, ItemBatch, Signed, WorkItem};
    let items = (0..chunks)
        .map(|c| WorkItem::CrawlChunk {
            urls: (0..per_chunk)
                .map(|u| format!("http://{site}/page/{}", c * per_chunk + u))
                .collect(),
        })
        .collect();
    let batch = ItemBatch { project: m.id(), seq: 1, items };
    (
        Envelope::Manifest(Signed::sign(owner, m)).to_bytes(),
        Envelope::Batch(Signed::sign(owner, &batch)).to_bytes(),
        m.id(),
    )
}

/// Runs `starling ARGS --data-dir <node's dir>` and returns its standard output, failing the
/// test if it exits non-zero.
pub fn cli(node: &Node, args: &[&str]) -> String {
    let out = std::process::Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(&node.dir)
        .output()
        .expect("run starling");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "starling {args:?} failed: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}
