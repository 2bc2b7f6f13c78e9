//! `/metrics` read by tools nobody here wrote: two real nodes share a project, then each is
//! scraped in the classic text format (no `Accept`) and in OpenMetrics (as Prometheus asks),
//! both texts are parsed by Python's `prometheus_client` (pinned, installed by the test), and,
//! where promtool can be had from Debian's `prometheus` package, linted by
//! `promtool check metrics`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::common::*;
use crate::warcio::{python_package, target_dir};

/// The `prometheus_client` release the test parses with.
const PROMETHEUS_CLIENT_VERSION: &str = "0.26.0";
/// Kinds of work, as labelled.
const WORK_KINDS: [&str; 3] = ["crawl", "seed", "relay"];
/// What Prometheus 2.x sends.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0;q=0.5,\
    application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";

/// Parses both texts with prometheus_client and prints the families as JSON.
const PARSE: &str = r#"
import json, math, sys
from prometheus_client.parser import text_string_to_metric_families as classic
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
def fams(parse, path):
    out = []
    for f in parse(open(path, encoding="utf-8").read()):
        out.append({"name": f.name, "type": f.type, "help": f.documentation,
                    "samples": [[s.name, s.labels, s.value if math.isfinite(s.value) else str(s.value)]
                                for s in f.samples]})
    return out
print(json.dumps({"classic": fams(classic, sys.argv[1]), "openmetrics": fams(openmetrics, sys.argv[2])}))
"#;

/// One scrape: content type and text.
fn scrape(node: &Node, accept: Option<&str>) -> (String, String) {
    let token = starling_node::api_client::read_token(&node.dir).unwrap();
    let http = reqwest::blocking::Client::builder().no_proxy().build().unwrap();
    let mut req = http.get(format!("{}/metrics", node.api.base())).bearer_auth(token);
    if let Some(a) = accept {
        req = req.header("Accept", a);
    }
    let resp = req.send().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    (ct, resp.text().unwrap())
}

/// Value of the classic-format sample line `key`, if any.
fn sample(text: &str, key: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.parse().ok())
}

/// Sum of the samples of `name` (any labels) in classic text.
fn total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

type Families = Vec<Value>;

fn parse_with_python(dir: &Path, classic: &str, om: &str) -> (Families, Families) {
    let py = python_package("prometheus_client", PROMETHEUS_CLIENT_VERSION, "prometheus_client");
    let (c, o) = (dir.join("classic.txt"), dir.join("openmetrics.txt"));
    std::fs::write(&c, classic).unwrap();
    std::fs::write(&o, om).unwrap();
    let out = Command::new("python3")
        .args(["-c", PARSE])
        .arg(&c)
        .arg(&o)
        .env("PYTHONPATH", py)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "prometheus_client refused the text: {}\nclassic:\n{classic}\nopenmetrics:\n{om}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let get = |k: &str| v[k].as_array().unwrap().clone();
    (get("classic"), get("openmetrics"))
}

/// Sample keys (name and sorted labels) of parsed families.
fn sample_keys(fams: &Families) -> BTreeSet<String> {
    fams.iter()
        .flat_map(|f| f["samples"].as_array().unwrap().iter())
        .map(|s| {
            let labels: BTreeMap<String, String> = serde_json::from_value(s[1].clone()).unwrap();
            format!("{}{labels:?}", s[0].as_str().unwrap())
        })
        .collect()
}

/// Checks what prometheus_client read from one node's scrapes.
fn check_parsed(classic: &Families, om: &Families) {
    // Open label sets may have no series yet; every other family has at least one.
    let may_be_empty = [
        "starling_fetch_statuses",
        "starling_gossip_peer_score",
        "starling_gossip_mesh_peers",
        "starling_gossip_topic_peers",
        "starling_project_items",
        "starling_shard_members",
        "starling_shard_depth",
        "starling_shard_counts_heard",
        "starling_project_progress_items",
        "starling_result_checks",
        "starling_marked_peers",
    ];
    for (fmt, fams) in [("classic", classic), ("openmetrics", om)] {
        assert!(fams.len() > 60, "{fmt}: only {} families", fams.len());
        for f in fams {
            let name = f["name"].as_str().unwrap();
            assert!(name.starts_with("starling_"), "{fmt}: family {name}");
            assert_ne!(f["type"], "unknown", "{fmt}: {name} has no type: {f}");
            assert!(!f["help"].as_str().unwrap().is_empty(), "{fmt}: {name} has no help");
            if !may_be_empty.contains(&name) {
                assert!(!f["samples"].as_array().unwrap().is_empty(), "{fmt}: {name} is empty");
            }
        }
    }
    let types = |fams: &Families| -> BTreeMap<String, String> {
        fams.iter()
            .map(|f| {
                (f["name"].as_str().unwrap().to_owned(), f["type"].as_str().unwrap().to_owned())
            })
            .collect()
    };
    let (ct, ot) = (types(classic), types(om));
    assert_eq!(ct["starling_items_done"], "counter");
    assert_eq!(ot["starling_items_done"], "counter");
    assert_eq!(ct["starling_p2p_bytes"], "counter");
    assert_eq!(ct["starling_work_duration_seconds"], "histogram");
    assert_eq!(ot["starling_work_duration_seconds"], "histogram");
    assert_eq!(ct["starling_build_info"], "gauge");
    assert_eq!(ot["starling_build"], "info");
    // The same series in both formats.
    assert_eq!(sample_keys(classic), sample_keys(om));
}

/// promtool: on the PATH, cached under the target dir, or unpacked there from Debian's
/// `prometheus` package (`apt-get download`, no install). `Err` says why there is none.
fn promtool() -> Result<PathBuf, String> {
    if let Ok(out) = Command::new("promtool").arg("--version").output()
        && out.status.success()
    {
        return Ok(PathBuf::from("promtool"));
    }
    let dir = target_dir().join("tools").join("prometheus-deb");
    let bin = dir.join("usr/bin/promtool");
    if bin.is_file() {
        return Ok(bin);
    }
    let work = tempfile::tempdir_in(target_dir()).map_err(|e| e.to_string())?;
    let download = || {
        Command::new("apt-get")
            .args(["download", "-q", "prometheus"])
            .current_dir(work.path())
            .output()
            .map_err(|e| format!("cannot run apt-get ({e})"))
    };
    let mut out = download()?;
    if !out.status.success() && is_root() {
        // The package lists may be missing or stale: refresh them once, as root.
        let _ = Command::new("apt-get").args(["update", "-q"]).output();
        out = download()?;
    }
    if !out.status.success() {
        return Err(format!(
            "apt-get download prometheus failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let deb = std::fs::read_dir(work.path())
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or("apt-get download left no .deb")?;
    let unpacked = work.path().join("x");
    let out = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&unpacked)
        .output()
        .map_err(|e| format!("cannot run dpkg-deb ({e})"))?;
    if !out.status.success() {
        return Err(format!("dpkg-deb -x failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    std::fs::create_dir_all(dir.parent().unwrap()).map_err(|e| e.to_string())?;
    // Another test may have put it there meanwhile; either copy serves.
    if std::fs::rename(&unpacked, &dir).is_err() && !bin.is_file() {
        return Err(format!("cannot move promtool into {}", dir.display()));
    }
    Ok(bin)
}

/// Whether the test runs as root (the owner of `/proc/self` is the effective user).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn promtool_check(text: &str) {
    let bin = match promtool() {
        Ok(b) => b,
        Err(why) => {
            eprintln!("SKIPPED promtool check metrics: no promtool ({why})");
            return;
        }
    };
    use std::io::Write;
    let mut child = Command::new(&bin)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}");
    eprintln!("promtool check metrics ({}): clean", bin.display());
}

#[test]
fn metrics_parse_in_both_formats_with_prometheus_tools() {
    let p = project(57, "metrics", 6, 20_000);
    let trust = trusted(&p);
    let a = Node::start(100, &trust);
    let mut args = trust.clone();
    args.extend(["--bootstrap".to_string(), a.addr()]);
    let b = Node::start(100, &args);
    let nodes = [a, b];
    wait_for("both nodes see each other live", Duration::from_secs(60), || {
        nodes.iter().all(|n| num(&n.status(), &["live_peers"]) == 1)
    });
    assert_eq!(nodes[0].publish(&p.manifest)["outcome"], "applied");
    assert_eq!(nodes[0].publish(&p.batch)["outcome"], "applied");
    wait_for_or(
        "all 6 items done on both nodes",
        Duration::from_secs(60),
        || nodes.iter().all(|n| num(&n.status(), &["items", "done"]) == 6),
        || dump(&nodes),
    );
    // Gossipsub grafts peers into its mesh on its heartbeat.
    wait_for("a gossip mesh peer on each node", Duration::from_secs(30), || {
        nodes.iter().all(|n| total(&scrape(n, None).1, "starling_gossip_mesh_peers") >= 1.0)
    });

    let tmp = tempfile::tempdir().unwrap();
    let mut completed = 0.0;
    let mut timed = 0.0;
    for (i, node) in nodes.iter().enumerate() {
        let (ct, classic) = scrape(node, None);
        assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
        assert!(!classic.contains("# EOF"));
        let (ct, om) = scrape(node, Some(PROMETHEUS_ACCEPT));
        assert_eq!(ct, "application/openmetrics-text; version=1.0.0; charset=utf-8");
        assert!(om.ends_with("# EOF\n"));
        let dir = tmp.path().join(format!("node{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let (c, o) = parse_with_python(&dir, &classic, &om);
        check_parsed(&c, &o);
        promtool_check(&classic);

        // The numbers say what happened.
        let version = env!("CARGO_PKG_VERSION");
        assert!(classic.contains(&format!("starling_build_info{{version=\"{version}\"")));
        assert_eq!(sample(&classic, "starling_items{state=\"done\"}"), Some(6.0));
        assert_eq!(
            sample(&classic, "starling_items_by_kind{kind=\"crawl\",state=\"done\"}"),
            Some(6.0),
            "{classic}"
        );
        // Spot-checks: the project's figures (this project checks nothing) and the counters.
        let p = format!("project=\"{}\",name=\"metrics\"", p.id.to_hex());
        for state in ["verified", "pending", "disputed", "overturned", "split"] {
            let key = format!("starling_result_checks{{{p},state=\"{state}\"}}");
            assert_eq!(sample(&classic, &key), Some(0.0), "{key}\n{classic}");
        }
        assert_eq!(sample(&classic, &format!("starling_marked_peers{{{p}}}")), Some(0.0));
        assert_eq!(sample(&classic, "starling_results_overturned_total"), Some(0.0));
        assert_eq!(sample(&classic, "starling_peers_marked_total"), Some(0.0));
        assert!(total(&classic, "starling_p2p_connections") >= 1.0, "{classic}");
        assert!(
            sample(&classic, "starling_p2p_bytes_total{transport=\"tcp\",direction=\"in\"}")
                .is_some_and(|v| v > 0.0),
            "{classic}"
        );
        assert!(
            sample(&classic, "starling_gossip_peer_score{stat=\"min\"}").is_some(),
            "{classic}"
        );
        assert!(total(&classic, "starling_sync_requests_total") >= 1.0, "{classic}");
        assert!(sample(&classic, "starling_uptime_seconds").is_some_and(|v| v > 0.0));
        completed += sample(&classic, "starling_runner_jobs_completed_total").unwrap();
        timed += WORK_KINDS
            .iter()
            .filter_map(|k| {
                let key = format!(
                    "starling_work_duration_seconds_count{{kind=\"{k}\",outcome=\"done\"}}"
                );
                sample(&classic, &key)
            })
            .sum::<f64>();
    }
    // Each item's result came from a job its holder timed (a runner counts a job completed
    // before the actor reads its report, so the two counters are not compared).
    assert!(completed >= 6.0, "{completed}");
    assert!(timed >= 6.0, "{timed} jobs timed done");
}

/// Every query of docs/grafana-starling.json is PromQL that promtool accepts (as recording
/// rules, with the dashboard's `$instance` variable at its "All" value). The unit tests check
/// that the series they read are the ones the node writes.
#[test]
fn grafana_queries_are_valid_promql() {
    let bin = match promtool() {
        Ok(b) => b,
        Err(why) => {
            eprintln!("SKIPPED promtool check rules: no promtool ({why})");
            return;
        }
    };
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/grafana-starling.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut rules = String::from("groups:\n  - name: grafana\n    rules:\n");
    let mut n = 0;
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap().replace("$instance", ".*");
            n += 1;
            rules.push_str(&format!(
                "      - record: grafana:query{n}\n        expr: {}\n",
                serde_json::to_string(&expr).unwrap()
            ));
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("grafana-rules.yml");
    std::fs::write(&file, &rules).unwrap();
    let out = Command::new(&bin).args(["check", "rules"]).arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "promtool check rules: {}{}\n{rules}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("promtool check rules: {n} dashboard queries parse");
}
