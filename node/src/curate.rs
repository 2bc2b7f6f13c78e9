//! The curator's tools and the operator's side of them: `starling project directory` signs a
//! directory of projects with their priorities (from the projects' signed manifests), and
//! `starling project follow KEY` makes the running node follow a curator, so it picks up the
//! projects that curator lists, and their priorities, with no more operator action. See
//! [`starling_protocol::directory`].

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow, bail};
use clap::Args;
use starling_protocol::directory::{DIRECTORY_ENTRIES_MAX, DIRECTORY_NAME_MAX};
use starling_protocol::wire::Validate;
use starling_protocol::{Directory, DirectoryEntry, Envelope, ProjectManifest, PublicKey, Signed};

use crate::cli_node::NodeDirArgs;
use crate::keyfile;
use crate::project::{read_signed, write_atomic};
use crate::views::Outcome;

/// Arguments of `starling project directory`.
#[derive(Debug, Args)]
pub struct DirectoryArgs {
    /// The curator's secret key (from `starling project keygen`).
    #[arg(long)]
    pub key: PathBuf,
    /// A short name for the directory, shown to operators.
    #[arg(long)]
    pub name: String,
    /// The directory's version; a higher version replaces a lower one on every follower.
    #[arg(long = "directory-version", value_name = "N")]
    pub dir_version: u64,
    /// A project to list: its signed manifest, with an optional priority (-128..=127, default
    /// 0) after a colon. Repeatable, at most 256.
    #[arg(long = "entry", value_name = "MANIFEST_FILE[:PRIORITY]", required = true)]
    pub entries: Vec<String>,
    /// Where to write the signed directory.
    #[arg(long)]
    pub out: PathBuf,
}

/// `starling project follow FILE|KEY`: makes the running node follow a curator.
#[derive(Debug, Clone, Default, Args)]
pub struct FollowArgs {
    #[command(flatten)]
    pub node: NodeDirArgs,
    /// The curator's public key (64 hex digits), a file holding one (the `.pub` file from
    /// keygen), or a signed directory whose curator to follow.
    #[arg(value_name = "FILE|KEY")]
    pub what: String,
}

/// Splits `MANIFEST_FILE[:PRIORITY]`: the part after the last colon is a priority when it
/// reads as a whole number, so paths with colons still work.
pub fn parse_entry(arg: &str) -> Result<(PathBuf, i8)> {
    let Some((path, tail)) = arg.rsplit_once(':') else { return Ok((arg.into(), 0)) };
    let t = tail.trim();
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Ok((arg.into(), 0));
    }
    let priority: i8 = t.parse().map_err(|_| {
        anyhow!("--entry {arg}: priority {t} is out of range: {} ..= {}", i8::MIN, i8::MAX)
    })?;
    Ok((path.into(), priority))
}

/// Reads a signed manifest for a directory entry, with its owner checked.
fn entry_manifest(path: &Path) -> Result<ProjectManifest> {
    let env = read_signed(path).map_err(|e| anyhow!("--entry: {e}"))?;
    let Envelope::Manifest(s) = env else {
        bail!("--entry {} holds a {}, not a project manifest", path.display(), env.kind());
    };
    let m = s.verify()?;
    if m.owner != s.signer() {
        bail!("--entry {} is signed by a key other than its owner", path.display());
    }
    Ok(m)
}

/// Builds the directory `args` describe, for the curator `curator`.
pub fn build_directory(args: &DirectoryArgs, curator: PublicKey) -> Result<Directory> {
    if args.name.is_empty() || args.name.len() > DIRECTORY_NAME_MAX {
        bail!("--name must be 1 ..= {DIRECTORY_NAME_MAX} bytes");
    }
    if args.entries.len() > DIRECTORY_ENTRIES_MAX {
        bail!(
            "{} entries: a directory lists at most {DIRECTORY_ENTRIES_MAX} projects",
            args.entries.len()
        );
    }
    let mut entries: Vec<(DirectoryEntry, PathBuf)> = Vec::with_capacity(args.entries.len());
    for arg in &args.entries {
        let (path, priority) = parse_entry(arg)?;
        let m = entry_manifest(&path)?;
        let entry = DirectoryEntry { project: m.id(), owner: m.owner, priority };
        if let Some((_, first)) = entries.iter().find(|(e, _)| e.project == entry.project) {
            bail!(
                "--entry {} lists project {:?} again (first from {})",
                path.display(),
                m.name,
                first.display()
            );
        }
        entries.push((entry, path));
    }
    let d = Directory {
        curator,
        name: args.name.clone(),
        version: args.dir_version,
        entries: entries.into_iter().map(|(e, _)| e).collect(),
    };
    d.validate().map_err(|e| anyhow!("directory is not valid: {e}"))?;
    Ok(d)
}

/// `starling project directory`: signs and writes a curator's directory.
pub fn make_directory(args: &DirectoryArgs) -> Result<()> {
    let key = keyfile::read(&args.key)?;
    let d = build_directory(args, key.public())?;
    let env = Envelope::Directory(Signed::sign(&key, &d));
    write_atomic(&args.out, &env.to_bytes())?;
    println!("{}", key.public());
    eprintln!(
        "signed directory {:?} v{} of {} projects by curator {} to {} (publish it with `starling publish {}`)",
        d.name,
        d.version,
        d.entries.len(),
        key.public(),
        args.out.display(),
        args.out.display()
    );
    Ok(())
}

/// The curator key `what` names: hex, a file of hex, or a signed directory's curator.
pub fn curator_key_of(what: &str) -> Result<PublicKey> {
    if let Ok(k) = what.trim().parse::<PublicKey>() {
        return Ok(k);
    }
    let bytes = std::fs::read(what).map_err(|e| {
        anyhow!("{what:?} is neither a key (64 hex digits) nor a readable file: {e}")
    })?;
    if std::str::from_utf8(&bytes).is_ok_and(keyfile::is_secret_key_text) {
        bail!(
            "{what} is a secret key; follow the public key instead (the `.pub` file from keygen)"
        );
    }
    if let Ok(Envelope::Directory(d)) = Envelope::from_file_bytes(&bytes) {
        let d = d.verify().map_err(|e| anyhow!("{what}: directory refused: {e}"))?;
        return Ok(d.curator);
    }
    match std::str::from_utf8(&bytes).ok().and_then(|t| t.trim().parse::<PublicKey>().ok()) {
        Some(k) => Ok(k),
        None => bail!("{what} holds neither a public key (64 hex digits) nor a signed directory"),
    }
}

/// `starling project follow`: follows a curator key on the running node.
pub fn follow(args: FollowArgs) -> Result<()> {
    let key = curator_key_of(&args.what)?;
    let client = args.node.client()?;
    let o: Outcome = client.post_json("/follow", key.to_hex().as_bytes())?;
    println!("following {} ({})", o.what, o.outcome);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_a_priority_after_the_last_colon_only_when_it_is_a_number() {
        assert_eq!(parse_entry("a.cbor").unwrap(), (PathBuf::from("a.cbor"), 0));
        assert_eq!(parse_entry("a.cbor:5").unwrap(), (PathBuf::from("a.cbor"), 5));
        assert_eq!(parse_entry("a.cbor:-128").unwrap(), (PathBuf::from("a.cbor"), -128));
        assert_eq!(parse_entry("dir:x/a.cbor").unwrap(), (PathBuf::from("dir:x/a.cbor"), 0));
        let err = parse_entry("a.cbor:200").unwrap_err().to_string();
        assert!(err.contains("out of range: -128 ..= 127"), "{err}");
    }

    #[test]
    fn curator_keys_come_from_hex_or_a_pub_file_and_never_a_secret_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = keyfile::generate().unwrap();
        let secret = dir.path().join("c.key");
        keyfile::write_new(&secret, &key).unwrap();
        let err = curator_key_of(secret.to_str().unwrap()).unwrap_err().to_string();
        assert!(err.contains("secret key"), "{err}");
        let public = dir.path().join("c.key.pub");
        std::fs::write(&public, format!("{}\n", key.public())).unwrap();
        assert_eq!(curator_key_of(public.to_str().unwrap()).unwrap(), key.public());
        assert_eq!(curator_key_of(&key.public().to_hex()).unwrap(), key.public());
        assert!(curator_key_of("nope").is_err());
    }
}
