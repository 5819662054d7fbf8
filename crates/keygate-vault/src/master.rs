//! The master key and where it comes from (S20).
//!
//! The master key itself is used for nothing but HKDF: it derives the key-encryption key
//! that wraps data keys, and the key check value that tells a wrong master key apart from
//! a right one without decrypting anything.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use hkdf::Hkdf;
use secrecy::{ExposeSecret, SecretBox};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Why a master key could not be had. The message never contains key material.
#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error("master key file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("master key environment variable {var}: {reason}")]
    Env { var: String, reason: String },
    /// The PKCS#11 module, token, PIN or key could not be had.
    #[error("PKCS#11 {what}: {reason}")]
    Pkcs11 { what: String, reason: String },
}

/// Why wrapping or unwrapping a key failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KekError {
    /// The wrapped bytes failed authentication under this key: tampering, a swapped row,
    /// or a different master key.
    #[error("authenticated decryption failed")]
    Rejected,
    /// The key could not be used at all (an HSM removed, logged out, or failing). Never
    /// a reason to fall back to anything else: the vault reports itself sealed.
    #[error("{0}")]
    Unavailable(String),
}

/// The key-encryption key that wraps data keys and the system key, wherever it lives.
///
/// Wrapped keys have one format whatever the source: `nonce(12) ‖ ciphertext ‖ tag(16)`
/// of AES-256-GCM with the caller's associated data. A file or environment key derives
/// the AES key by HKDF and wraps in this process ([`SoftKek`]); a PKCS#11 key wraps
/// inside the token and never leaves it.
pub trait Kek: Send + Sync {
    /// A human description of where the key is, never its contents.
    fn describe(&self) -> String;
    /// A value stored beside the data that is equal iff the key is the same one.
    fn check_value(&self) -> Result<Vec<u8>, KekError>;
    /// Wraps a 256-bit key, bound to `aad`.
    fn wrap(&self, key: &[u8; 32], aad: &[u8]) -> Result<Vec<u8>, KekError>;
    /// Opens what [`Kek::wrap`] made for the same `aad`.
    fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<Zeroizing<[u8; 32]>, KekError>;
}

/// keygate's 256-bit master key. Zeroised on drop; `Debug` is redacted.
pub struct MasterKey(SecretBox<[u8; 32]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(SecretBox::new(Box::new(bytes)))
    }

    /// A new random key, as `keygate init` makes.
    pub fn generate() -> Self {
        Self::from_bytes(*crate::crypto::random_key())
    }

    fn derive(&self, info: &[u8]) -> Zeroizing<[u8; 32]> {
        let hk = Hkdf::<Sha256>::new(Some(b"keygate"), self.0.expose_secret());
        let mut out = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA256's limit of 8160; the error cannot happen.
        let _ = hk.expand(info, out.as_mut());
        out
    }

    /// The key-encryption key that wraps data keys and the system key.
    pub(crate) fn kek(&self) -> Zeroizing<[u8; 32]> {
        self.derive(b"keygate/v1/kek")
    }

    /// The key check value stored beside the data: equal iff the master key is the same.
    pub fn check_value(&self) -> Vec<u8> {
        self.derive(b"keygate/v1/kcv").to_vec()
    }

    /// The raw bytes, for writing a new key file.
    pub fn expose_bytes(&self) -> &[u8; 32] {
        self.0.expose_secret()
    }
}

/// A source of the master key: a file, an environment variable, or a key in a PKCS#11
/// token ([`crate::Pkcs11KeyProvider`]) that never leaves it.
pub trait MasterKeyProvider: Send + Sync {
    /// A human description of the source, never its contents.
    fn describe(&self) -> String;
    /// The key-encryption key, ready to wrap and unwrap.
    fn open(&self) -> Result<Arc<dyn Kek>, MasterKeyError>;
}

/// A master key held in this process: the AES key is derived from it by HKDF.
pub struct SoftKek {
    kek: Zeroizing<[u8; 32]>,
    kcv: Vec<u8>,
    source: String,
}

impl SoftKek {
    /// `source` says where the key came from, for messages.
    pub fn new(master: &MasterKey, source: impl Into<String>) -> Self {
        Self {
            kek: master.kek(),
            kcv: master.check_value(),
            source: source.into(),
        }
    }
}

impl Kek for SoftKek {
    fn describe(&self) -> String {
        self.source.clone()
    }

    fn check_value(&self) -> Result<Vec<u8>, KekError> {
        Ok(self.kcv.clone())
    }

    fn wrap(&self, key: &[u8; 32], aad: &[u8]) -> Result<Vec<u8>, KekError> {
        crate::crypto::encrypt(&self.kek, key, aad).map_err(|_| KekError::Rejected)
    }

    fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<Zeroizing<[u8; 32]>, KekError> {
        crate::crypto::unwrap_key(&self.kek, wrapped, aad).map_err(|_| KekError::Rejected)
    }
}

/// A file holding the 32 raw key bytes (as `keygate init` writes it) or their hex or
/// base64 text. It must not be readable by group or others, unless
/// `allow_insecure_permissions` (an operator's explicit choice) says otherwise.
#[derive(Debug, Clone)]
pub struct FileKeyProvider {
    pub path: PathBuf,
    pub allow_insecure_permissions: bool,
}

impl FileKeyProvider {
    /// A provider that refuses a key file others may read.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            allow_insecure_permissions: false,
        }
    }
}

/// `Err(reason)` when group or others may read the key file (e.g. mode 0644).
pub fn check_key_file_permissions(path: &Path) -> Result<(), String> {
    check_private(path)
}

/// An environment variable holding the key as 64 hex digits or base64.
#[derive(Debug, Clone)]
pub struct EnvKeyProvider {
    pub var: String,
}

fn parse_text_key(text: &str) -> Option<[u8; 32]> {
    let t = text.trim();
    if let Ok(bytes) = hex::decode(t) {
        return bytes.try_into().ok();
    }
    for engine in [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ] {
        if let Ok(bytes) = engine.decode(t) {
            return bytes.try_into().ok();
        }
    }
    None
}

impl MasterKeyProvider for FileKeyProvider {
    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }

    fn open(&self) -> Result<Arc<dyn Kek>, MasterKeyError> {
        Ok(Arc::new(SoftKek::new(&self.load()?, self.describe())))
    }
}

impl FileKeyProvider {
    /// The key itself, for `keygate vault rekey` between files.
    pub fn load(&self) -> Result<MasterKey, MasterKeyError> {
        let err = |reason: String| MasterKeyError::File {
            path: self.path.clone(),
            reason,
        };
        if !self.allow_insecure_permissions {
            check_private(&self.path).map_err(err)?;
        }
        let bytes = Zeroizing::new(std::fs::read(&self.path).map_err(|e| err(e.to_string()))?);
        if let Ok(raw) = <[u8; 32]>::try_from(bytes.as_slice()) {
            return Ok(MasterKey::from_bytes(raw));
        }
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| err("expected 32 raw bytes, 64 hex digits or base64".into()))?;
        parse_text_key(text)
            .map(MasterKey::from_bytes)
            .ok_or_else(|| err("expected 32 raw bytes, 64 hex digits or base64".into()))
    }
}

#[cfg(unix)]
fn check_private(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "mode {mode:04o} lets others read it; run chmod 600 on it"
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> Result<(), String> {
    Ok(())
}

impl MasterKeyProvider for EnvKeyProvider {
    fn describe(&self) -> String {
        format!("environment variable {}", self.var)
    }

    fn open(&self) -> Result<Arc<dyn Kek>, MasterKeyError> {
        Ok(Arc::new(SoftKek::new(&self.load()?, self.describe())))
    }
}

impl EnvKeyProvider {
    /// The key itself.
    pub fn load(&self) -> Result<MasterKey, MasterKeyError> {
        let err = |reason: &str| MasterKeyError::Env {
            var: self.var.clone(),
            reason: reason.into(),
        };
        let value = Zeroizing::new(std::env::var(&self.var).map_err(|_| err("not set"))?);
        parse_text_key(&value)
            .map(MasterKey::from_bytes)
            .ok_or_else(|| err("expected 64 hex digits or base64 of 32 bytes"))
    }
}

/// Writes a key file with mode 0600, refusing to replace an existing file.
pub fn write_key_file(path: &Path, key: &MasterKey) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(key.expose_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trips_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let key = MasterKey::generate();
        write_key_file(&path, &key).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let loaded = FileKeyProvider::new(path.clone()).load().unwrap();
        assert_eq!(loaded.check_value(), key.check_value());
        assert!(write_key_file(&path, &key).is_err(), "must not overwrite");
    }

    #[cfg(unix)]
    #[test]
    fn world_readable_key_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        std::fs::write(&path, [7u8; 32]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = FileKeyProvider::new(path).load().unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn hex_and_base64_text_keys_parse() {
        let raw = [0xabu8; 32];
        assert_eq!(parse_text_key(&hex::encode(raw)), Some(raw));
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        assert_eq!(parse_text_key(&format!("{b64}\n")), Some(raw));
        assert_eq!(parse_text_key("too short"), None);
    }

    #[test]
    fn check_value_distinguishes_keys_and_debug_is_redacted() {
        let a = MasterKey::from_bytes([1; 32]);
        let b = MasterKey::from_bytes([2; 32]);
        assert_ne!(a.check_value(), b.check_value());
        assert_eq!(
            a.check_value(),
            MasterKey::from_bytes([1; 32]).check_value()
        );
        assert_ne!(a.check_value(), a.kek().to_vec());
        assert_eq!(format!("{a:?}"), "MasterKey([redacted])");
    }
}
