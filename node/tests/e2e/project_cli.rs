//! End-to-end tests of `starling project …` on real files: the happy path, and one clear error
//! line with a non-zero exit (never a panic) for every kind of bad file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn starling(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_starling")).args(args).output().expect("runs starling")
}

fn ok(args: &[&str]) -> String {
    let out = starling(args);
    assert!(
        out.status.success(),
        "starling {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Runs a command expected to fail; returns its stderr after checking it is one clear line.
fn fails(args: &[&str]) -> String {
    let out = starling(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "starling {args:?} should fail");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert!(!stderr.contains("RUST_BACKTRACE"), "backtrace hint: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "not one line: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

fn p(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Runs `project add-urls` expecting it to fail; returns its one error line.
fn add_urls_fails(key: &Path, project: &Path, urls: &Path, extra: &[&str], out: &Path) -> String {
    let mut args = vec!["project", "add-urls", "--key", s(key), "--project", s(project)];
    args.extend(["--urls", s(urls), "--out", s(out)]);
    args.extend(extra);
    fails(&args)
}

struct Fixture {
    _dir: tempfile::TempDir,
    key: PathBuf,
    project: PathBuf,
    batch: PathBuf,
    root: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let key = p(&root, "owner.key");
    let public = ok(&["project", "keygen", "--out", s(&key)]);
    assert_eq!(public.trim().len(), 64);
    let pub_file = std::fs::read_to_string(root.join("owner.key.pub")).expect("public key file");
    assert_eq!(pub_file.trim(), public.trim());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).expect("key exists").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let manifest = p(&root, "project.toml");
    std::fs::write(
        &manifest,
        r#"
name = "demo"
description = "A test project"
lease_secs = 60
replication = 2
scope = ["example.org"]
robots = "obey"
[rate]
per_host = "4/s"
burst = 4
concurrency = 2
lanes = 3
"#,
    )
    .expect("write manifest");
    let project = p(&root, "project.cbor");
    let id =
        ok(&["project", "new", "--key", s(&key), "--manifest", s(&manifest), "--out", s(&project)]);
    assert_eq!(id.trim().len(), 64);
    let urls = p(&root, "urls.txt");
    let list: String = (0..25).map(|i| format!("https://www.example.org/page/{i}\n")).collect();
    std::fs::write(&urls, format!("# a comment\n\n{list}")).expect("write urls");
    let batch = p(&root, "batch.cbor");
    ok(&[
        "project",
        "add-urls",
        "--key",
        s(&key),
        "--project",
        s(&project),
        "--urls",
        s(&urls),
        "--chunk",
        "10",
        "--seq",
        "7",
        "--out",
        s(&batch),
    ]);
    Fixture { _dir: dir, key, project, batch, root }
}

#[test]
fn keygen_new_add_urls_and_inspect() {
    let f = fixture();
    let text = ok(&["project", "inspect", s(&f.project)]);
    assert!(text.contains("valid manifest"), "{text}");
    assert!(text.contains("rate_per_host: 4/s"), "{text}");
    // The rate binds the whole mesh unless the owner says otherwise, and inspect says so.
    assert!(text.contains("rate_scope: mesh") && text.contains("lanes: 3"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["project", "inspect", "--json", s(&f.project)])).expect("json");
    assert_eq!(json["name"], "demo");
    assert_eq!(json["lease_ms"], 60_000);
    assert_eq!(json["replication"], 2);
    let batch: serde_json::Value =
        serde_json::from_str(&ok(&["project", "inspect", "--json", s(&f.batch)])).expect("json");
    assert_eq!(batch["seq"], 7);
    assert_eq!(batch["project"], json["project"]);
    let items = batch["items"].as_array().expect("items");
    assert_eq!(items.len(), 3, "25 URLs in chunks of 10");
    assert_eq!(items[2]["urls"], 5);
}

#[test]
fn flags_alone_make_a_project() {
    let f = fixture();
    let out = p(&f.root, "flags.cbor");
    ok(&[
        "project",
        "new",
        "--key",
        s(&f.key),
        "--name",
        "small",
        "--rate-per-host",
        "2/s",
        "--burst",
        "3",
        "--scope",
        "example.net",
        "--rate-scope",
        "node",
        "--out",
        s(&out),
    ]);
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["project", "inspect", "--json", s(&out)])).expect("json");
    assert_eq!(json["rate_scope"], "node");
    assert_eq!(json["lanes"], 1);
    assert_eq!(json["name"], "small");
    assert_eq!(json["rate_per_host"], "2/s");
    assert_eq!(json["burst"], 3);
    assert_eq!(json["scope"][0], "example.net");
}

#[test]
fn bad_files_get_one_clear_line() {
    let f = fixture();
    let bytes = std::fs::read(&f.project).expect("read project");

    let truncated = p(&f.root, "truncated.cbor");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    assert!(fails(&["project", "inspect", s(&truncated)]).contains("not a Starling signed file"));

    // Flip a byte inside the signed body: decodes, but the signature fails.
    let corrupt = p(&f.root, "corrupt.cbor");
    let mut flipped = bytes.clone();
    let at = bytes.windows(4).position(|w| w == b"demo").expect("name in body");
    flipped[at] ^= 0x01;
    std::fs::write(&corrupt, &flipped).expect("write");
    assert!(fails(&["project", "inspect", s(&corrupt)]).contains("does not verify"));

    let foreign = p(&f.root, "foreign.png");
    std::fs::write(&foreign, b"\x89PNG\r\n\x1a\n not ours").expect("write");
    assert!(fails(&["project", "inspect", s(&foreign)]).contains("not a Starling signed file"));

    let empty = p(&f.root, "empty");
    std::fs::write(&empty, b"").expect("write");
    assert!(fails(&["project", "inspect", s(&empty)]).contains("empty"));

    assert!(fails(&["project", "inspect", s(&p(&f.root, "missing"))]).contains("cannot read"));

    // A batch signed with another key than the project's.
    let other = p(&f.root, "other.key");
    ok(&["project", "keygen", "--out", s(&other)]);
    let urls = p(&f.root, "u.txt");
    std::fs::write(&urls, "https://example.org/\n").expect("write");
    let out = p(&f.root, "b.cbor");
    let err = add_urls_fails(&other, &f.project, &urls, &[], &out);
    assert!(err.contains("is not the key of project"), "{err}");
    assert!(!out.exists());

    // add-urls given a batch where a manifest is expected.
    let err = add_urls_fails(&f.key, &f.batch, &urls, &[], &out);
    assert!(err.contains("not a project manifest"), "{err}");
}

#[test]
fn bad_inputs_to_new_and_add_urls_get_one_clear_line() {
    let f = fixture();
    let bad_toml = p(&f.root, "bad.toml");
    std::fs::write(&bad_toml, "name = \"x\"\nrate = 5\n").expect("write");
    let out = p(&f.root, "x.cbor");
    let err = fails(&[
        "project",
        "new",
        "--key",
        s(&f.key),
        "--manifest",
        s(&bad_toml),
        "--out",
        s(&out),
    ]);
    assert!(err.contains("is not valid"), "{err}");
    let unknown = p(&f.root, "unknown.toml");
    std::fs::write(&unknown, "name = \"x\"\nleese_secs = 5\n").expect("write");
    assert!(
        fails(&["project", "new", "--key", s(&f.key), "--manifest", s(&unknown), "--out", s(&out)])
            .contains("leese_secs")
    );
    assert!(
        fails(&["project", "new", "--key", s(&f.key), "--out", s(&out)]).contains("needs a name")
    );
    assert!(
        fails(&[
            "project",
            "new",
            "--key",
            s(&f.key),
            "--name",
            "x",
            "--rate-per-host",
            "lots",
            "--out",
            s(&out)
        ])
        .contains("not a number")
    );
    let garbage_key = p(&f.root, "garbage.key");
    std::fs::write(&garbage_key, "hello").expect("write");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&garbage_key, std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
    }
    assert!(
        fails(&["project", "new", "--key", s(&garbage_key), "--name", "x", "--out", s(&out)])
            .contains("not a Starling secret key")
    );
    assert!(fails(&["project", "keygen", "--out", s(&f.key)]).contains("already exists"));

    let urls = p(&f.root, "bad-urls.txt");
    std::fs::write(&urls, "https://example.org/ok\nftp://example.org/file\n").expect("write");
    let err = add_urls_fails(&f.key, &f.project, &urls, &[], &out);
    assert!(err.contains(":2:") && err.contains("http"), "{err}");
    std::fs::write(&urls, "https://elsewhere.com/\n").expect("write");
    let err = add_urls_fails(&f.key, &f.project, &urls, &[], &out);
    assert!(err.contains("outside the project's scope"), "{err}");
    std::fs::write(&urls, "https://example.org/\n").expect("write");
    let err = add_urls_fails(&f.key, &f.project, &urls, &["--chunk", "0"], &out);
    assert!(err.contains("--chunk"), "{err}");
    // Within the limit as typed, over it once the spaces are percent-encoded for signing.
    let spaced = format!("https://example.org/{}\n", "a ".repeat(1_000));
    assert!(spaced.len() <= starling_protocol::item::URL_MAX);
    std::fs::write(&urls, spaced).expect("write");
    let err = add_urls_fails(&f.key, &f.project, &urls, &[], &out);
    assert!(err.contains(":1:") && err.contains("bytes once normalised"), "{err}");
    assert!(!out.exists(), "a batch was written");

    let name_out = ["--name", "x", "--out", s(&out)];
    let new = |extra: &[&str]| {
        let mut args = vec!["project", "new", "--key", s(&f.key)];
        args.extend(extra);
        args.extend(name_out);
        fails(&args)
    };
    let err = new(&["--burst", "4294967295"]);
    assert!(err.contains("burst 4294967295 is out of range: 0 ..= 100"), "{err}");
    let err = new(&["--rate-per-host", "4294967/s"]);
    assert!(err.contains("out of range: 0.001/s ..= 1000/s"), "{err}");
    let err = new(&["--concurrency", "0"]);
    assert!(err.contains("concurrency 0 is out of range: 1 ..= 64"), "{err}");
    let err = new(&["--lanes", "0"]);
    assert!(err.contains("lanes 0 is out of range: 1 ..= 64"), "{err}");
    let err = new(&["--rate-scope", "planet"]);
    assert!(err.contains("rate scope \"planet\" is neither \"mesh\" nor \"node\""), "{err}");
    let err = new(&["--rate-scope", "node", "--lanes", "4"]);
    assert!(err.contains("with rate scope \"node\" leave lanes at 1"), "{err}");
    let err = new(&["--verify-sample", "1.5"]);
    assert!(err.contains("verify sample 1.5 is out of range: 0 ..= 1"), "{err}");
    let err = new(&["--verify-sample", "10%"]);
    assert!(err.contains("verify sample \"10%\" is not a number"), "{err}");
    let err = new(&["--verify-sample", "0.0001"]);
    assert!(err.contains("finer than thousandths"), "{err}");
    let err = new(&["--verify-strikes", "0"]);
    assert!(err.contains("verify strikes 0 is out of range: 1 ..= 16"), "{err}");
    let err = new(&["--verify-strikes", "-3"]);
    assert!(err.contains("verify strikes -3 is out of range: 1 ..= 16"), "{err}");
    let err = new(&["--verify-strikes", "17"]);
    assert!(err.contains("verify strikes 17 is out of range: 1 ..= 16"), "{err}");
    let err = new(&["--proof-every", "5s"]);
    assert!(err.contains("proof every 5s is out of range: 10s ..= 7d, or 0 (off)"), "{err}");
    let err = new(&["--proof-every", "8d"]);
    assert!(err.contains("proof every 8d is out of range"), "{err}");
    let err = new(&["--proof-every", "often"]);
    assert!(err.contains("proof every \"often\" is not a duration"), "{err}");
    let err = new(&["--proof-grace", "30d"]);
    assert!(err.contains("proof grace 30d is out of range: 0 ..= 7d"), "{err}");
    let err = new(&["--verify-volatile", "example.org/live"]);
    assert!(err.contains("is not a URL prefix"), "{err}");
    let err = new(&["--verify-volatile", "ftp://example.org/"]);
    assert!(err.contains("must start with http:// or https://"), "{err}");
    let toml = p(&f.root, "verify.toml");
    std::fs::write(&toml, "name = \"x\"\n[verify]\nsample = 2\n").expect("write");
    let err =
        fails(&["project", "new", "--key", s(&f.key), "--manifest", s(&toml), "--out", s(&out)]);
    assert!(err.contains("verify sample 2 is out of range"), "{err}");
    std::fs::write(&toml, "name = \"x\"\n[verify]\nsampel = 0.5\n").expect("write");
    let err =
        fails(&["project", "new", "--key", s(&f.key), "--manifest", s(&toml), "--out", s(&out)]);
    assert!(err.contains("sampel"), "{err}");
    std::fs::write(&toml, "name = \"x\"\n[verify]\nproof_every = 5\n").expect("write");
    let err =
        fails(&["project", "new", "--key", s(&f.key), "--manifest", s(&toml), "--out", s(&out)]);
    assert!(err.contains("proof every 5s is out of range"), "{err}");
    assert!(!out.exists(), "a manifest was written");
}

/// The spot-check policy: the defaults when nothing is said, the `[verify]` table of the
/// manifest file, and flags over it; `inspect` shows it.
#[test]
fn verify_policy_from_the_file_and_flags() {
    let f = fixture();
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["project", "inspect", "--json", s(&f.project)])).expect("json");
    let defaults = serde_json::json!({
        "sample": 0.1,
        "volatile": [],
        "strikes": 3,
        "proof_every_ms": 1_800_000,
        "proof_grace_ms": 300_000,
    });
    assert_eq!(json["verify"], defaults);
    let text = ok(&["project", "inspect", s(&f.project)]);
    let shown = "verify: {\"proof_every_ms\":1800000,\"proof_grace_ms\":300000,\"sample\":0.1,\"strikes\":3,\"volatile\":[]}";
    assert!(text.contains(shown), "{text}");

    let toml = p(&f.root, "checked.toml");
    std::fs::write(
        &toml,
        "name = \"checked\"\n[verify]\nsample = 1\nvolatile = [\"https://Example.org/live/\"]\nstrikes = 5\nproof_every = \"1h\"\nproof_grace = 600\n",
    )
    .expect("write");
    let out = p(&f.root, "checked.cbor");
    let new = |extra: &[&str]| {
        let mut args = vec!["project", "new", "--key", s(&f.key), "--manifest", s(&toml)];
        args.extend(extra);
        args.extend(["--out", s(&out)]);
        ok(&args);
        let inspected = ok(&["project", "inspect", "--json", s(&out)]);
        serde_json::from_str::<serde_json::Value>(&inspected).expect("json")["verify"].clone()
    };
    assert_eq!(
        new(&[]),
        serde_json::json!({
            "sample": 1.0,
            "volatile": ["https://example.org/live/"],
            "strikes": 5,
            "proof_every_ms": 3_600_000,
            "proof_grace_ms": 600_000,
        })
    );
    let flags = ["--verify-sample", "0.25", "--verify-strikes", "2"];
    let more =
        ["--verify-volatile", "http://example.org/news", "--verify-volatile", "https://a.example/"];
    let v = new(&[&flags[..], &more[..]].concat());
    assert_eq!(v["sample"], 0.25);
    assert_eq!(v["strikes"], 2);
    let volatile = serde_json::json!([
        "http://example.org/news",
        "https://a.example/",
        "https://example.org/live/"
    ]);
    assert_eq!(v["volatile"], volatile, "the file's prefixes and the flags', sorted");
    assert_eq!(new(&["--verify-sample", "0"])["sample"], 0.0);
    // Storage proofs: flags over the file; off is 0.
    let v = new(&["--proof-every", "10m", "--proof-grace", "0"]);
    assert_eq!(
        (v["proof_every_ms"].as_u64(), v["proof_grace_ms"].as_u64()),
        (Some(600_000), Some(0))
    );
    assert_eq!(new(&["--proof-every", "off"])["proof_every_ms"], 0);
    // Under four leases (the default lease is 300 s), `new` says what the slot will be.
    let run = starling(&[
        "project",
        "new",
        "--key",
        s(&f.key),
        "--manifest",
        s(&toml),
        "--proof-every",
        "10m",
        "--out",
        s(&out),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains("storage proofs come every 20m (four leases), not every 10m"),
        "{stderr}"
    );
}

#[test]
fn publishing_to_a_node_that_does_not_trust_the_project_fails_saying_why() {
    use crate::common::{Node, project};
    let node = Node::start(100, &["--listen".into(), "/ip4/127.0.0.1/tcp/0".into()]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = project(44, "untrusted", 2, 60_000);
    let (manifest, batch) = (p(tmp.path(), "m.cbor"), p(tmp.path(), "b.cbor"));
    std::fs::write(&manifest, &t.manifest).expect("write");
    std::fs::write(&batch, &t.batch).expect("write");
    let dir = s(&node.dir);
    let key = t.owner.public().to_hex();
    // The batch alone: parked, since the node neither trusts nor knows its project.
    let err = fails(&["publish", "--data-dir", dir, s(&batch)]);
    assert!(err.contains("batch parked") && err.contains("not trusted"), "{err}");
    assert!(err.contains(&format!("starling project trust {key}")), "{err}");
    let err = fails(&["publish", "--data-dir", dir, s(&manifest)]);
    assert!(err.contains("manifest refused"), "{err}");
    // Trusted, the manifest applies; a batch of a project the node does not know is parked,
    // and says to publish the manifest first.
    ok(&["project", "trust", "--data-dir", dir, &key]);
    let other = project(44, "unknown", 2, 60_000);
    std::fs::write(&batch, &other.batch).expect("write");
    let err = fails(&["publish", "--data-dir", dir, s(&batch)]);
    assert!(err.contains("publish the project's manifest first"), "{err}");
    let done = ok(&["publish", "--data-dir", dir, s(&manifest)]);
    assert!(done.contains("manifest applied"), "{done}");
}
