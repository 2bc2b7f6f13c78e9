//! A newcomer's first minutes, on real processes: `starling up`'s first log lines are
//! Starling's and say what's next (with `--log-file` receiving them too), and the README's
//! "For project owners" block runs as written against a real node.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::Router;
use serde_json::Value;
use starling_node::api_client::ApiClient;

use crate::common::{BIN, fast_args, wait_for, wait_for_or};

/// Kills the node when the test ends, however it ends.
struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `starling up` with a fresh `HOME` (so the platform data dir is under it), no inherited
/// Starling settings, the test's short timers and `extra`; stderr goes to `stderr`.
fn start_up(home: &Path, stderr: &Path, extra: &[&str]) -> Up {
    let mut cmd = Command::new(BIN);
    cmd.arg("up").args(fast_args()).args(["--listen", "/ip4/127.0.0.1/tcp/0"]).args(extra);
    clean_env(&mut cmd, home);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(stderr).unwrap()));
    Up(cmd.spawn().expect("spawn starling up"))
}

/// What a newcomer's shell has: a home, and none of the Starling variables or test switches.
fn clean_env(cmd: &mut Command, home: &Path) {
    cmd.env("HOME", home);
    for k in ["XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"] {
        cmd.env_remove(k);
    }
    for (k, _) in std::env::vars() {
        if k.starts_with("STARLING_") {
            cmd.env_remove(k);
        }
    }
}

/// The platform data dir under `home` (Linux's XDG layout).
fn data_dir(home: &Path) -> PathBuf {
    home.join(".local/share/starling")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn up_says_whats_next_first_in_its_own_words_and_logs_to_a_rotating_file() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let stderr = tmp.path().join("stderr");
    let log = tmp.path().join("logs").join("starling.log");
    let log_arg = log.to_str().unwrap();
    let _node = start_up(&home, &stderr, &["--log-file", log_arg, "--log-file-max", "2KiB"]);
    wait_for_or(
        "the what's-next block",
        Duration::from_secs(90),
        || read(&stderr).contains("what's next"),
        || read(&stderr),
    );
    let text = read(&stderr);
    // Only Starling's INFO lines: the libraries under it (librqbit, libp2p) keep theirs quiet.
    let events: Vec<&str> = text.lines().filter(|l| !l.starts_with(' ')).collect();
    assert!(events[0].contains(" starling_node::"), "first line: {text}");
    for l in &events {
        if l.contains(" INFO ") {
            assert!(l.contains(" INFO starling"), "a third-party INFO line: {l}\n{text}");
        }
    }
    // The block says what the node does, why it would idle, and the commands that fix it.
    assert!(text.contains("what's next: listening on /ip4/127.0.0.1/tcp/"), "{text}");
    assert!(text.contains("idle: no peers connected: start with --bootstrap"), "{text}");
    assert!(text.contains("starling project trust KEY"), "{text}");
    // The log file got the same lines; kept files stay within the bound.
    let mut logged = String::new();
    for n in (1..=5).rev() {
        let old = PathBuf::from(format!("{log_arg}.{n}"));
        logged.push_str(&read(&old));
    }
    logged.push_str(&read(&log));
    assert!(logged.contains("idle: no projects known"), "log file:\n{logged}");
    assert!(!logged.contains('\x1b'), "no terminal colours in the file");
    assert!(!Path::new(&format!("{log_arg}.6")).exists());
}

/// A page and an `/about` page on 127.0.0.1; `robots.txt` is missing.
fn start_site() -> std::net::SocketAddr {
    let page = || async { axum::response::Html("<html><body>hello</body></html>") };
    crate::common::serve_local(
        Router::new()
            .route("/", axum::routing::get(page))
            .route("/about", axum::routing::get(page)),
    )
}

/// The lines of the first ```sh block after the heading `heading` in `markdown`.
fn sh_block_after(markdown: &str, heading: &str) -> Vec<String> {
    let rest = &markdown[markdown.find(heading).unwrap_or_else(|| panic!("no {heading:?}"))..];
    let start = rest.find("```sh\n").expect("no sh block") + "```sh\n".len();
    let block = &rest[start..];
    let block = &block[..block.find("```").expect("unclosed block")];
    block.lines().filter(|l| !l.trim().is_empty()).map(str::to_owned).collect()
}

#[test]
fn readme_owner_block_runs_as_written_against_a_real_node() {
    let readme = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"));
    let lines = sh_block_after(&readme, "## For project owners");
    assert!(lines.len() >= 6, "{lines:?}");

    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    // `starling` on the PATH, as an installed binary is.
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(BIN, bin.join("starling")).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());

    let site = start_site();
    let _node = start_up(
        &home,
        &tmp.path().join("stderr"),
        &["--allow-private-targets", "true", "--torrent-loopback", "true"],
    );
    let dir = data_dir(&home);
    let mut api = None;
    wait_for("the node's API", Duration::from_secs(60), || {
        api =
            ApiClient::from_data_dir(&dir).ok().filter(|a| a.get_json::<Value>("/status").is_ok());
        api.is_some()
    });
    let api = api.unwrap();

    // Only the marked placeholders are filled in.
    let fill = |line: &str| {
        line.replace("<URL>", &format!("http://{site}/")).replace("<HOST>", &site.ip().to_string())
    };
    for line in &lines {
        let line = fill(line);
        assert!(!line.contains('<'), "an unfilled placeholder in the README: {line}");
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(&line).current_dir(&work);
        clean_env(&mut cmd, &home);
        let out = cmd.env("PATH", &path).output().unwrap();
        assert!(
            out.status.success(),
            "README line failed ({}): {line}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The node got the project, trusts it, and crawls the page (its result copies wait for
    // other nodes to hold them).
    wait_for_or(
        "the README's project crawled",
        Duration::from_secs(120),
        || {
            let list: Vec<Value> = api.get_json("/projects").unwrap_or_default();
            list.iter().any(|p| {
                p["name"] == "my-crawl"
                    && p["trusted"] == true
                    && p["items"]["done"].as_u64() >= Some(1)
                    && p["urls"]["ok"].as_u64() == Some(1)
            })
        },
        || format!("{:?}", api.get_json::<Value>("/projects")),
    );

    // The README's export line, on a terminal: progress redrawn in place, then the result.
    let line = fill(
        readme.lines().find(|l| l.starts_with("starling export --project <PROJECT>")).unwrap(),
    )
    .replace("<PROJECT>", "my-crawl");
    let screen = run_in_terminal(&line, &work, &home, &path);
    assert!(screen.contains("\r\x1b[2Kwriting 1/1 files, "), "redrawn in place: {screen:?}");
    assert!(screen.contains("wrote 1/1 files, "), "{screen}");
    assert!(screen.contains("exported 1 WARC files"), "{screen}");
    assert!(work.join("warcs").join("index.cdx").exists());
}

/// Runs `line` with `sh` in a pseudo-terminal until it exits 0; returns all it wrote.
fn run_in_terminal(line: &str, cwd: &Path, home: &Path, path: &str) -> String {
    use portable_pty::{CommandBuilder, PtySize, native_pty_system};
    use std::io::Read;
    let size = PtySize { rows: 24, cols: 200, pixel_width: 0, pixel_height: 0 };
    let pair = native_pty_system().openpty(size).expect("open a pseudo-terminal");
    let mut cmd = CommandBuilder::new("sh");
    cmd.args(["-c", line]);
    cmd.cwd(cwd);
    cmd.env("HOME", home);
    cmd.env("PATH", path);
    for (k, _) in std::env::vars() {
        if k.starts_with("STARLING_") || k.starts_with("XDG_") {
            cmd.env_remove(k);
        }
    }
    let mut child = pair.slave.spawn_command(cmd).expect("spawn in the terminal");
    drop(pair.slave);
    let mut reader = pair.master.try_clone_reader().expect("reader");
    let out = std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = reader.read_to_end(&mut all);
        String::from_utf8_lossy(&all).into_owned()
    });
    let status = child.wait().unwrap();
    drop(pair.master);
    let text = out.join().unwrap();
    assert!(status.success(), "{line} failed in a terminal: {text}");
    text
}
