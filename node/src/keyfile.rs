//! Key files: a header line, then an ed25519 secret as 64 hex digits, created with mode 0600.
//!
//! The header ([`SECRET_HEADER`]) keeps a secret key from ever being mistaken for a public key
//! (both are 32 bytes); public keys are shared as bare hex or in a `.pub` file.
//!
//! Used for node identities and project owner keys alike. A key file that is missing,
//! unreadable, readable by others, or not 64 hex digits gets one clear error naming the file.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use starling_protocol::Keypair;

/// First line of every secret key file.
pub const SECRET_HEADER: &str = "starling-secret-key-v1";

/// Whether `text` is the contents of a secret key file.
pub fn is_secret_key_text(text: &str) -> bool {
    text.trim_start().starts_with(SECRET_HEADER)
}

/// Generates a fresh key from the OS RNG.
pub fn generate() -> Result<Keypair> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
    Ok(Keypair::from_secret(secret))
}

/// Writes `key` to a new file at `path` with mode 0600; refuses to overwrite.
pub fn write_new(path: &Path, key: &Keypair) -> Result<()> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => {
            anyhow::anyhow!("{} already exists; refusing to overwrite a key", path.display())
        }
        _ => anyhow::anyhow!("cannot create key file {}: {e}", path.display()),
    })?;
    writeln!(f, "{SECRET_HEADER}\n{}", hex::encode(key.secret_bytes()))
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write key file {}", path.display()))?;
    Ok(())
}

/// Reads a key file written by [`write_new`].
pub fn read(path: &Path) -> Result<Keypair> {
    let text = fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read key file {}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            bail!(
                "key file {} is readable by others (mode {:o}); run `chmod 600 {}`",
                path.display(),
                mode & 0o777,
                path.display()
            );
        }
    }
    let mut secret = [0u8; 32];
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let (header, body) = (lines.next(), lines.next());
    let well_formed = header == Some(SECRET_HEADER)
        && lines.next().is_none()
        && body.is_some_and(|b| b.len() == 64 && hex::decode_to_slice(b, &mut secret).is_ok());
    if !well_formed {
        bail!(
            "key file {} is not a Starling secret key (expected `{SECRET_HEADER}` and 64 hex digits)",
            path.display()
        );
    }
    Ok(Keypair::from_secret(secret))
}

/// Reads the key at `path`, creating it first if it does not exist.
pub fn load_or_create(path: &Path) -> Result<Keypair> {
    if path.exists() {
        return read(path);
    }
    let key = generate()?;
    write_new(path, &key)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let key = generate().unwrap();
        write_new(&path, &key).unwrap();
        assert_eq!(read(&path).unwrap().public(), key.public());
        assert!(write_new(&path, &key).unwrap_err().to_string().contains("already exists"));
        fs::write(dir.path().join("bad"), "nothex").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(dir.path().join("bad"), fs::Permissions::from_mode(0o600)).unwrap();
            let open = dir.path().join("open");
            fs::write(&open, format!("{SECRET_HEADER}\n{}\n", hex::encode([1u8; 32]))).unwrap();
            fs::set_permissions(&open, fs::Permissions::from_mode(0o644)).unwrap();
            assert!(read(&open).unwrap_err().to_string().contains("readable by others"));
        }
        assert!(
            read(&dir.path().join("bad"))
                .unwrap_err()
                .to_string()
                .contains("not a Starling secret key")
        );
        assert!(is_secret_key_text(&fs::read_to_string(&path).unwrap()));
        assert!(read(&dir.path().join("missing")).unwrap_err().to_string().contains("cannot read"));
    }
}
