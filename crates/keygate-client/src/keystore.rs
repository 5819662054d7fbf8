//! Where the device's DPoP key lives: the [`KeyStore`] trait and two implementations.
//!
//! The trait never hands out the private key. It offers the public JWK and a signing
//! operation, which is exactly what a hardware keystore (iOS Secure Enclave, Android
//! StrongBox) can do: see the crate docs for backing it through FFI.

use std::fmt;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use keygate_auth::b64;
use keygate_auth::jwk::{Jkt, PublicJwk};
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use rand::rngs::OsRng;
use zeroize::Zeroizing;

/// Why a key store operation failed. Never carries key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyStoreError {
    /// The key file is readable or writable by group or others.
    #[error("key file {path} has mode {mode:o}; it must be 0600 (owner only)")]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The stored key is neither PKCS#8 DER, PKCS#8 PEM nor a raw 32-byte P-256 scalar.
    #[error("key file {path} does not hold a P-256 private key")]
    InvalidKey {
        /// The file.
        path: PathBuf,
    },
    /// Reading or writing the key file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The public key is not a P-256 key (the client signs ES256 only).
    #[error("the key store's public key is not P-256")]
    NotP256,
    /// A hardware or platform key store refused or failed to sign (user cancelled,
    /// key invalidated, …). Implementations describe the cause without key material.
    #[error("signing failed: {0}")]
    Signing(String),
    /// A platform signature could not be converted to 64-byte R‖S.
    #[error("signature is not a valid ECDSA P-256 signature")]
    BadSignature,
}

/// A P-256 key that signs DPoP proofs (ES256) and never leaves its store.
///
/// Implement it over a hardware keystore with [`public_jwk`](Self::public_jwk) and
/// [`sign`](Self::sign) only; nothing in the client asks for the private key.
pub trait KeyStore: Send + Sync {
    /// The public key as a JWK; must be [`PublicJwk::P256`].
    fn public_jwk(&self) -> Result<PublicJwk, KeyStoreError>;

    /// Signs `signing_input` (the ASCII `header.payload` of a JWS) with ECDSA P-256 over
    /// SHA-256 and returns the 64-byte big-endian R‖S (RFC 7518 §3.4). Platform APIs
    /// that return DER (Security framework, Android Keystore) convert with
    /// [`signature_from_der`].
    fn sign(&self, signing_input: &[u8]) -> Result<[u8; 64], KeyStoreError>;

    /// The RFC 7638 thumbprint of the public key (`dpop_jkt`, `cnf.jkt`).
    fn thumbprint(&self) -> Result<Jkt, KeyStoreError> {
        Ok(self.public_jwk()?.thumbprint())
    }
}

/// Converts an ASN.1 DER ECDSA signature (as `SecKeyCreateSignature` with
/// `.ecdsaSignatureMessageX962SHA256` or Android's `Signature("SHA256withECDSA")`
/// produce) into the 64-byte R‖S that JWS needs.
pub fn signature_from_der(der: &[u8]) -> Result<[u8; 64], KeyStoreError> {
    let sig = p256::ecdsa::Signature::from_der(der).map_err(|_| KeyStoreError::BadSignature)?;
    Ok(sig.to_bytes().into())
}

/// The public JWK of a P-256 verifying key.
fn jwk_of(vk: &p256::ecdsa::VerifyingKey) -> PublicJwk {
    let point = vk.to_encoded_point(false);
    let coord =
        |c: Option<&p256::FieldBytes>| b64::encode(c.map(|b| b.as_slice()).unwrap_or_default());
    PublicJwk::P256 {
        x: coord(point.x()),
        y: coord(point.y()),
    }
}

fn sign_with(key: &p256::ecdsa::SigningKey, input: &[u8]) -> [u8; 64] {
    let sig: p256::ecdsa::Signature = key.sign(input);
    sig.to_bytes().into()
}

/// A software key held in process memory (tests, CLIs, short-lived tools). Zeroized on
/// drop; `Debug` shows only the thumbprint.
pub struct MemoryKeyStore {
    key: p256::ecdsa::SigningKey,
    jwk: PublicJwk,
}

impl MemoryKeyStore {
    /// A fresh key from the OS CSPRNG.
    pub fn generate() -> Self {
        Self::from_key(p256::ecdsa::SigningKey::random(&mut OsRng))
    }

    fn from_key(key: p256::ecdsa::SigningKey) -> Self {
        let jwk = jwk_of(key.verifying_key());
        Self { key, jwk }
    }
}

impl fmt::Debug for MemoryKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryKeyStore")
            .field("thumbprint", &self.jwk.thumbprint())
            .field("key", &"[REDACTED]")
            .finish()
    }
}

impl KeyStore for MemoryKeyStore {
    fn public_jwk(&self) -> Result<PublicJwk, KeyStoreError> {
        Ok(self.jwk.clone())
    }

    fn sign(&self, signing_input: &[u8]) -> Result<[u8; 64], KeyStoreError> {
        Ok(sign_with(&self.key, signing_input))
    }
}

/// A software key kept in a file readable by its owner only (mode 0600).
///
/// The file holds the key as PKCS#8 DER when this type creates it; PKCS#8 PEM and a raw
/// 32-byte scalar are accepted on load. A file that group or others can read or write is
/// refused, not repaired: someone may already have copied the key.
pub struct FileKeyStore {
    path: PathBuf,
    inner: MemoryKeyStore,
}

impl fmt::Debug for FileKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileKeyStore")
            .field("path", &self.path)
            .field("thumbprint", &self.inner.jwk.thumbprint())
            .field("key", &"[REDACTED]")
            .finish()
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> KeyStoreError + '_ {
    move |source| KeyStoreError::Io {
        path: path.to_owned(),
        source,
    }
}

impl FileKeyStore {
    /// Loads the key at `path`, or creates a fresh one there (mode 0600) if the file does
    /// not exist. Creation never overwrites: if another process creates the file first,
    /// its key is loaded.
    pub fn open_or_create(path: impl Into<PathBuf>) -> Result<Self, KeyStoreError> {
        let path = path.into();
        match Self::open(&path) {
            Err(KeyStoreError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                match Self::create(&path) {
                    Err(KeyStoreError::Io { source, .. })
                        if source.kind() == io::ErrorKind::AlreadyExists =>
                    {
                        Self::open(&path)
                    }
                    other => other,
                }
            }
            other => other,
        }
    }

    /// Loads an existing key file, checking its permissions first.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, KeyStoreError> {
        let path = path.as_ref();
        // Check the mode of the file actually read (fstat), not of the path beforehand.
        let mut file = fs::File::open(path).map_err(io_error(path))?;
        check_permissions(path, &file)?;
        let mut bytes = Zeroizing::new(Vec::new());
        io::Read::read_to_end(&mut file, &mut bytes).map_err(io_error(path))?;
        let key = parse_key(&bytes).ok_or_else(|| KeyStoreError::InvalidKey {
            path: path.to_owned(),
        })?;
        Ok(Self {
            path: path.to_owned(),
            inner: MemoryKeyStore::from_key(key),
        })
    }

    /// Creates a fresh key at `path` (which must not exist), mode 0600, written to a
    /// temporary file, synced, then linked into place so a crash leaves either no file
    /// or a complete one.
    pub fn create(path: impl AsRef<Path>) -> Result<Self, KeyStoreError> {
        let path = path.as_ref();
        let key = p256::ecdsa::SigningKey::random(&mut OsRng);
        let der = key.to_pkcs8_der().map_err(|_| KeyStoreError::InvalidKey {
            path: path.to_owned(),
        })?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "key".to_owned());
        let suffix = b64::encode(keygate_auth::opaque::random_bytes::<12>());
        let tmp = dir.join(format!(".{file_name}.{suffix}.tmp"));
        let result = (|| {
            let mut file = create_private(&tmp).map_err(io_error(&tmp))?;
            file.write_all(der.as_bytes()).map_err(io_error(&tmp))?;
            file.sync_all().map_err(io_error(&tmp))?;
            // hard_link fails if `path` exists: no clobbering a concurrent creator.
            fs::hard_link(&tmp, path).map_err(io_error(path))?;
            if let Ok(d) = fs::File::open(&dir) {
                let _ = d.sync_all();
            }
            Ok(())
        })();
        let _ = fs::remove_file(&tmp);
        result?;
        Ok(Self {
            path: path.to_owned(),
            inner: MemoryKeyStore::from_key(key),
        })
    }

    /// The file the key lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl KeyStore for FileKeyStore {
    fn public_jwk(&self) -> Result<PublicJwk, KeyStoreError> {
        self.inner.public_jwk()
    }

    fn sign(&self, signing_input: &[u8]) -> Result<[u8; 64], KeyStoreError> {
        self.inner.sign(signing_input)
    }
}

fn parse_key(bytes: &[u8]) -> Option<p256::ecdsa::SigningKey> {
    if bytes.len() == 32 {
        return p256::ecdsa::SigningKey::from_slice(bytes).ok();
    }
    if let Ok(key) = p256::ecdsa::SigningKey::from_pkcs8_der(bytes) {
        return Some(key);
    }
    let text = std::str::from_utf8(bytes).ok()?;
    p256::SecretKey::from_pkcs8_pem(text.trim())
        .ok()
        .map(p256::ecdsa::SigningKey::from)
}

#[cfg(unix)]
fn check_permissions(path: &Path, file: &fs::File) -> Result<(), KeyStoreError> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = file.metadata().map_err(io_error(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyStoreError::InsecurePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_permissions(_path: &Path, _file: &fs::File) -> Result<(), KeyStoreError> {
    // No POSIX modes: rely on the platform's per-user profile ACLs.
    Ok(())
}

#[cfg(unix)]
fn create_private(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn create_private(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate_auth::jws::{self, Algorithm};

    fn verifies(store: &dyn KeyStore, input: &[u8], sig: &[u8; 64]) -> bool {
        let key = store.public_jwk().unwrap().verification_key().unwrap();
        jws::verify_signature(&key, Algorithm::Es256, input, sig).is_ok()
    }

    #[test]
    fn memory_store_signs_verifiable_es256() {
        let store = MemoryKeyStore::generate();
        let sig = store.sign(b"header.payload").unwrap();
        assert!(verifies(&store, b"header.payload", &sig));
        assert!(!verifies(&store, b"header.other", &sig));
        assert!(matches!(
            store.public_jwk().unwrap(),
            PublicJwk::P256 { .. }
        ));
    }

    #[test]
    fn der_signatures_convert_to_raw() {
        let store = MemoryKeyStore::generate();
        let sig: p256::ecdsa::Signature = store.key.sign(b"input");
        let der = sig.to_der();
        let raw = signature_from_der(der.as_bytes()).unwrap();
        assert!(verifies(&store, b"input", &raw));
        assert!(signature_from_der(&[0x30, 0x00]).is_err());
    }

    #[test]
    fn debug_shows_no_key_material() {
        let store = MemoryKeyStore::generate();
        let scalar = b64::encode(store.key.to_bytes());
        let debug = format!("{store:?}");
        assert!(debug.contains("REDACTED"));
        assert!(!debug.contains(&scalar));
    }

    #[cfg(unix)]
    #[test]
    fn file_store_round_trip_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dpop.key");
        let created = FileKeyStore::open_or_create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let reopened = FileKeyStore::open_or_create(&path).unwrap();
        assert_eq!(
            created.thumbprint().unwrap(),
            reopened.thumbprint().unwrap()
        );
        let sig = reopened.sign(b"x.y").unwrap();
        assert!(verifies(&created, b"x.y", &sig));
        // No temporary files left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        // Creating over an existing file is refused.
        assert!(FileKeyStore::create(&path).is_err());
        assert_eq!(
            created.thumbprint().unwrap(),
            FileKeyStore::open(&path).unwrap().thumbprint().unwrap()
        );
    }

    #[cfg(unix)]
    #[test]
    fn file_store_refuses_group_or_other_access() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dpop.key");
        FileKeyStore::create(&path).unwrap();
        for mode in [0o640, 0o604, 0o620, 0o602, 0o644, 0o666] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let err = FileKeyStore::open(&path).unwrap_err();
            assert!(
                matches!(err, KeyStoreError::InsecurePermissions { mode: m, .. } if m == mode),
                "{mode:o}: {err}"
            );
            assert!(FileKeyStore::open_or_create(&path).is_err());
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        FileKeyStore::open(&path).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn file_store_loads_raw_scalar_and_pem_and_refuses_garbage() {
        use p256::pkcs8::LineEnding;
        let dir = tempfile::tempdir().unwrap();
        let key = p256::ecdsa::SigningKey::random(&mut OsRng);
        let expected = jwk_of(key.verifying_key()).thumbprint();

        let raw = dir.path().join("raw.key");
        fs::write(&raw, key.to_bytes()).unwrap();
        set_private(&raw);
        assert_eq!(
            FileKeyStore::open(&raw).unwrap().thumbprint().unwrap(),
            expected
        );

        let pem = dir.path().join("pem.key");
        let text = p256::SecretKey::from(&key)
            .to_pkcs8_pem(LineEnding::LF)
            .unwrap();
        fs::write(&pem, text.as_bytes()).unwrap();
        set_private(&pem);
        assert_eq!(
            FileKeyStore::open(&pem).unwrap().thumbprint().unwrap(),
            expected
        );

        let bad = dir.path().join("bad.key");
        fs::write(&bad, [0u8; 32]).unwrap();
        set_private(&bad);
        assert!(matches!(
            FileKeyStore::open(&bad),
            Err(KeyStoreError::InvalidKey { .. })
        ));
    }

    #[cfg(unix)]
    fn set_private(path: &Path) {
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
    }
}
