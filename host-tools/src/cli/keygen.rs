//! `classmod keygen`, and reading the key files it writes.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use classmod_blob::{parse_public_key, parse_secret_key, public_key_text, secret_key_text, SigningKey, VerifyingKey};

use classmod_runtime::io::regular;

use super::{model_error, PathContext};

/// The largest key file read: a key is one line of hex.
const KEY_FILE_BYTES: u64 = 1 << 16;

#[derive(clap::Args)]
pub struct Args {
    /// Writes PREFIX.secret (keep it on the build machine) and PREFIX.public (install it on devices).
    #[arg(long)]
    out: PathBuf,
}

pub fn read_secret_key(path: &Path) -> Result<SigningKey> {
    parse_secret_key(&regular::read_to_string(path, KEY_FILE_BYTES).map_err(|e| model_error(path, e))?).at(path)
}

pub fn read_public_key(path: &Path) -> Result<VerifyingKey> {
    parse_public_key(&regular::read_to_string(path, KEY_FILE_BYTES).map_err(|e| model_error(path, e))?).at(path)
}

/// Creates `path` (refusing to overwrite), with `mode` on Unix, and writes `text`.
fn create(path: &Path, text: &str, mode: u32) -> Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = o.open(path).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).at(path)?;
    Ok(())
}

pub fn run(a: Args) -> Result<()> {
    // ThreadRng: ChaCha12 seeded (and reseeded) from the operating system's generator.
    let key = fresh_key();
    let (secret, public) = (a.out.with_extension("secret"), a.out.with_extension("public"));
    create(&secret, &secret_key_text(&key), 0o600)?;
    create(&public, &public_key_text(&key.verifying_key()), 0o644)?;
    println!("secret key: {} (keep it off devices)\npublic key: {}", secret.display(), public.display());
    Ok(())
}

/// A new signing key from the operating system's randomness.
pub fn fresh_key() -> SigningKey {
    let mut seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut seed);
    SigningKey::from_bytes(&seed)
}
