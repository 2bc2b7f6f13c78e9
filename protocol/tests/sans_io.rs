//! The protocol crate stays sans-IO: no clock, no OS randomness, no I/O in its sources.
//! (`.ci/run` also checks its dependency tree for tokio, libp2p, redb and getrandom.)

use std::path::Path;

fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("read source");
            out.push((path.display().to_string(), text));
        }
    }
}

#[test]
fn protocol_sources_read_no_clock_randomness_or_io() {
    let mut files = Vec::new();
    sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
    assert!(files.len() > 5);
    let banned = [
        "SystemTime",
        "Instant::now",
        "thread_rng",
        "OsRng",
        "rand::rng()",
        "getrandom",
        "std::fs",
        "std::net",
        "tokio",
    ];
    for (path, text) in &files {
        for word in banned {
            assert!(!text.contains(word), "{path} uses {word}");
        }
    }
}
