//! The master key in a PKCS#11 token (an HSM, or SoftHSM2 in tests) (S20).
//!
//! The key is an AES-256 secret-key object with `CKA_SENSITIVE` true and `CKA_EXTRACTABLE`
//! false: its bytes never leave the token. Data keys are wrapped and unwrapped inside the
//! token with `CKM_AES_GCM`, in the same `nonce ‖ ciphertext ‖ tag` format as a file key,
//! bound to the same associated data. Any failure to reach the token (module missing,
//! token absent or removed, wrong PIN, key missing) is an error the vault reports as
//! sealed; nothing ever falls back to a key in memory.
//!
//! Sessions are pooled: opening one and logging in costs more than a wrap, and a session
//! is not shared between threads (PKCS#11 forbids concurrent use of one session). A
//! failure other than a rejected ciphertext drops every pooled session and retries once
//! on a fresh one (the token may have been re-inserted); a second failure is reported.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::master::{Kek, KekError, MasterKeyError, MasterKeyProvider};

/// Check values of token keys start with this, so a store can say where its key lives.
pub(crate) const KCV_PREFIX: &[u8] = b"pkcs11:";

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// The fixed nonce of the check-value encryption. Random wrap nonces meet it with
/// probability 2⁻⁹⁶ per wrap; the check value itself is a hash of a ciphertext of zeros,
/// which says nothing about the key beyond "same or not".
const KCV_NONCE: [u8; NONCE_LEN] = *b"keygate-kcv1";
const KCV_AAD: &[u8] = b"keygate/v1/kcv/pkcs11";
/// Sessions kept open for reuse; more may be open at once under load.
const MAX_POOLED: usize = 16;

/// Which token holds the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSelector {
    Label(String),
    Slot(u64),
}

impl std::fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSelector::Label(l) => write!(f, "token {l:?}"),
            TokenSelector::Slot(s) => write!(f, "slot {s}"),
        }
    }
}

/// `[master_key] pkcs11 = { module, token_label | slot, key_label, pin_env }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Config {
    /// The PKCS#11 module (a shared library), e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    pub token: TokenSelector,
    /// `CKA_LABEL` of the AES-256 key.
    pub key_label: String,
    /// The environment variable holding the user PIN (never the PIN itself in config).
    pub pin_env: String,
}

/// A master key in a PKCS#11 token.
#[derive(Debug, Clone)]
pub struct Pkcs11KeyProvider {
    pub config: Pkcs11Config,
}

impl Pkcs11KeyProvider {
    pub fn new(config: Pkcs11Config) -> Self {
        Self { config }
    }

    /// Generates the key inside the token (non-extractable, sensitive, AES-256) when no
    /// key has its label yet. Returns whether it made one.
    pub fn ensure_key(&self) -> Result<bool, MasterKeyError> {
        let token = Token::connect(&self.config)?;
        let session = token
            .open_rw_session()
            .map_err(|reason| self.err("session", reason))?;
        if token
            .find_key(&session)
            .map_err(|reason| self.err("key", reason))?
            .is_some()
        {
            return Ok(false);
        }
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Label(self.config.key_label.as_bytes().to_vec()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Sign(false),
            Attribute::Derive(false),
        ];
        session
            .generate_key(&Mechanism::AesKeyGen, &template)
            .map_err(|e| self.err("generating the key", describe(&e)))?;
        Ok(true)
    }

    fn err(&self, what: &str, reason: String) -> MasterKeyError {
        MasterKeyError::Pkcs11 {
            what: format!(
                "{} ({} in {})",
                what,
                self.config.token,
                self.config.module.display()
            ),
            reason,
        }
    }
}

impl MasterKeyProvider for Pkcs11KeyProvider {
    fn describe(&self) -> String {
        describe_config(&self.config)
    }

    fn open(&self) -> Result<Arc<dyn Kek>, MasterKeyError> {
        let token = Token::connect(&self.config)?;
        // One session up front: it proves the PIN and finds the key now, so a bad
        // configuration is reported at start-up, not at the first secret.
        let (session, key) = token.session().map_err(|reason| self.err("key", reason))?;
        token
            .check_key(&session, key)
            .map_err(|reason| self.err("key", reason))?;
        let kcv = check_value_on(&session, key).map_err(|e| self.err("key", describe(&e)))?;
        let kek = Pkcs11Kek {
            token,
            kcv,
            pool: Mutex::new(vec![(session, key)]),
        };
        Ok(Arc::new(kek))
    }
}

fn describe_config(c: &Pkcs11Config) -> String {
    format!(
        "PKCS#11 key {:?} in {} ({})",
        c.key_label,
        c.token,
        c.module.display()
    )
}

/// cryptoki's own messages are paragraphs from the standard; the code names are what an
/// operator searches for.
fn describe(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, function) => format!("{function:?} failed: {rv:?}"),
        CkError::LibraryLoading(e) => format!("cannot load the module: {e}"),
        other => other.to_string(),
    }
}

/// One loaded module per path per process: `C_Initialize` may be called once.
fn module(path: &std::path::Path) -> Result<Pkcs11, String> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut modules = MODULES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(m) = modules.get(path) {
        return Ok(m.clone());
    }
    if !path.exists() {
        return Err("the module file does not exist".into());
    }
    let ctx = Pkcs11::new(path).map_err(|e| describe(&e))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(describe(&e)),
    }
    modules.insert(path.to_path_buf(), ctx.clone());
    Ok(ctx)
}

/// The module, the token's place and the PIN: what a fresh session needs.
struct Token {
    ctx: Pkcs11,
    config: Pkcs11Config,
    pin: AuthPin,
}

impl Token {
    fn connect(config: &Pkcs11Config) -> Result<Self, MasterKeyError> {
        let err = |what: &str, reason: String| MasterKeyError::Pkcs11 {
            what: format!("{what} ({})", config.module.display()),
            reason,
        };
        let ctx = module(&config.module).map_err(|r| err("module", r))?;
        let pin = std::env::var(&config.pin_env).map_err(|_| {
            err(
                "PIN",
                format!("environment variable {} is not set", config.pin_env),
            )
        })?;
        Ok(Self {
            ctx,
            config: config.clone(),
            pin: AuthPin::from(pin),
        })
    }

    /// The slot holding the configured token, looked up afresh each time: a token put
    /// back may come up in another slot.
    fn slot(&self) -> Result<Slot, String> {
        let slots = self.ctx.get_slots_with_token().map_err(|e| describe(&e))?;
        for slot in slots {
            match &self.config.token {
                TokenSelector::Slot(id) if slot.id() == *id => return Ok(slot),
                TokenSelector::Label(label) => {
                    let Ok(info) = self.ctx.get_token_info(slot) else {
                        continue;
                    };
                    if info.label().trim_end() == label {
                        return Ok(slot);
                    }
                }
                TokenSelector::Slot(_) => {}
            }
        }
        Err(format!(
            "no {} is present (token removed, or not initialised?)",
            self.config.token
        ))
    }

    fn login(&self, session: &Session) -> Result<(), String> {
        match session.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => Err(format!(
                "wrong PIN (from environment variable {})",
                self.config.pin_env
            )),
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
                Err("the PIN is locked; unlock it with the token's SO PIN".into())
            }
            Err(e) => Err(describe(&e)),
        }
    }

    fn open_rw_session(&self) -> Result<Session, String> {
        let slot = self.slot()?;
        let session = self.ctx.open_rw_session(slot).map_err(|e| describe(&e))?;
        self.login(&session)?;
        Ok(session)
    }

    fn find_key(&self, session: &Session) -> Result<Option<ObjectHandle>, String> {
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Label(self.config.key_label.as_bytes().to_vec()),
        ];
        let found = session.find_objects(&template).map_err(|e| describe(&e))?;
        match found.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            more => Err(format!(
                "{} AES keys are labelled {:?}; keygate needs exactly one",
                more.len(),
                self.config.key_label
            )),
        }
    }

    /// A fresh logged-in session and the key's handle in it.
    fn session(&self) -> Result<(Session, ObjectHandle), String> {
        let slot = self.slot()?;
        let session = self.ctx.open_ro_session(slot).map_err(|e| describe(&e))?;
        self.login(&session)?;
        let key = self.find_key(&session)?.ok_or_else(|| {
            format!(
                "no AES key labelled {:?} (create it with `keygate vault rekey --to-config`)",
                self.config.key_label
            )
        })?;
        Ok((session, key))
    }

    /// Refuses a key whose bytes could leave the token, or that is not AES-256.
    fn check_key(&self, session: &Session, key: ObjectHandle) -> Result<(), String> {
        let attrs = session
            .get_attributes(
                key,
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::ValueLen,
                ],
            )
            .map_err(|e| describe(&e))?;
        for a in attrs {
            match a {
                Attribute::Sensitive(false) => {
                    return Err("the key is not CKA_SENSITIVE; keygate requires a key whose value the token never reveals".into());
                }
                Attribute::Extractable(true) => {
                    return Err("the key is CKA_EXTRACTABLE; keygate requires a key that cannot leave the token".into());
                }
                Attribute::ValueLen(len) if u64::from(len) != 32 => {
                    return Err(format!(
                        "the key is {} bytes; keygate requires AES-256 (32 bytes)",
                        u64::from(len)
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

struct Pkcs11Kek {
    token: Token,
    /// The check value the key had when the vault opened: a fresh session must find the
    /// same key, so a token swapped for another with the same labels wraps nothing.
    kcv: Vec<u8>,
    pool: Mutex<Vec<(Session, ObjectHandle)>>,
}

/// The check value computed on `session`: a hash of AES-GCM over zeros under a fixed nonce.
fn check_value_on(session: &Session, key: ObjectHandle) -> Result<Vec<u8>, CkError> {
    let mut nonce = KCV_NONCE;
    let params = GcmParams::new(&mut nonce, KCV_AAD, (TAG_LEN as u64 * 8).into())?;
    let sealed = session.encrypt(&Mechanism::AesGcm(params), key, &[0u8; 32])?;
    let mut kcv = KCV_PREFIX.to_vec();
    kcv.extend_from_slice(&Sha256::digest(&sealed));
    Ok(kcv)
}

impl Pkcs11Kek {
    /// A fresh session, with the key proven to be the one the vault opened with.
    fn fresh(&self) -> Result<(Session, ObjectHandle), String> {
        let (session, key) = self.token.session()?;
        let kcv = check_value_on(&session, key).map_err(|e| describe(&e))?;
        if kcv != self.kcv {
            return Err(format!(
                "the key labelled {:?} is not the key this vault opened with (check value differs); refusing to use it",
                self.token.config.key_label
            ));
        }
        Ok((session, key))
    }

    /// Runs `op` on a pooled session, or on a fresh one when the pooled one fails.
    ///
    /// Tokens differ in how they refuse a ciphertext that fails authentication (SoftHSM2
    /// says `CKR_GENERAL_ERROR`), so a failure on a fresh, verified session is told apart
    /// by asking the key for its check value on that session: if the key answers, the
    /// data was refused ([`KekError::Rejected`]); if not, the token is unavailable.
    fn with_session<T>(
        &self,
        op: impl Fn(&Session, ObjectHandle) -> Result<T, CkError>,
    ) -> Result<T, KekError> {
        let pooled = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut first_error = None;
        if let Some((session, key)) = pooled {
            match op(&session, key) {
                Ok(v) => {
                    self.put_back(session, key);
                    return Ok(v);
                }
                Err(e) => first_error = Some(describe(&e)),
            }
            // The other pooled sessions may share this one's fate (a token removed).
            self.pool.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
        let (session, key) = self
            .fresh()
            .map_err(|reason| self.unavailable(first_error.as_deref(), &reason))?;
        match op(&session, key) {
            Ok(v) => {
                self.put_back(session, key);
                Ok(v)
            }
            Err(e) => match check_value_on(&session, key) {
                Ok(kcv) if kcv == self.kcv => {
                    self.put_back(session, key);
                    Err(KekError::Rejected)
                }
                _ => Err(self.unavailable(first_error.as_deref(), &describe(&e))),
            },
        }
    }

    fn unavailable(&self, first: Option<&str>, last: &str) -> KekError {
        let source = describe_config(&self.token.config);
        KekError::Unavailable(match first {
            Some(first) if first != last => format!("{source}: {first}; then {last}"),
            _ => format!("{source}: {last}"),
        })
    }

    fn put_back(&self, session: Session, key: ObjectHandle) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < MAX_POOLED {
            pool.push((session, key));
        }
    }
}

impl Kek for Pkcs11Kek {
    fn describe(&self) -> String {
        describe_config(&self.token.config)
    }

    fn check_value(&self) -> Result<Vec<u8>, KekError> {
        self.with_session(check_value_on)
    }

    fn wrap(&self, data_key: &[u8; 32], aad: &[u8]) -> Result<Vec<u8>, KekError> {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let sealed = self.with_session(|session, key| {
            let mut iv = nonce;
            let params = GcmParams::new(&mut iv, aad, (TAG_LEN as u64 * 8).into())?;
            session.encrypt(&Mechanism::AesGcm(params), key, data_key)
        })?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<Zeroizing<[u8; 32]>, KekError> {
        if wrapped.len() != NONCE_LEN + 32 + TAG_LEN {
            return Err(KekError::Rejected);
        }
        let (nonce, sealed) = wrapped.split_at(NONCE_LEN);
        let plain = Zeroizing::new(self.with_session(|session, key| {
            let mut iv = [0u8; NONCE_LEN];
            iv.copy_from_slice(nonce);
            let params = GcmParams::new(&mut iv, aad, (TAG_LEN as u64 * 8).into())?;
            session.decrypt(&Mechanism::AesGcm(params), key, sealed)
        })?);
        let mut out = Zeroizing::new([0u8; 32]);
        if plain.len() != 32 {
            return Err(KekError::Rejected);
        }
        out.copy_from_slice(&plain);
        Ok(out)
    }
}
