//! Data keys, the providers that wrap them, and the cipher both use (AES-256-GCM).

use std::fmt;
use std::future::Future;
use std::num::NonZeroUsize;
use std::path::Path;
use std::pin::Pin;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

use super::PiiError;

/// A subject's data key: 32 random bytes, never stored unwrapped (kept with its expanded
/// cipher, made once: reading a long stream decrypts with it for every event).
#[derive(Clone)]
pub struct DataKey {
    bytes: [u8; 32],
    cipher: Cipher,
}

impl DataKey {
    /// A new random key.
    ///
    /// # Errors
    /// [`PiiError::Provider`] when the operating system has no randomness to give.
    pub fn generate() -> Result<Self, PiiError> {
        Ok(Self::from_bytes(random()?))
    }

    /// A key from its bytes (a [`KeyProvider`] unwrapping one).
    #[must_use]
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self {
            bytes,
            cipher: Cipher::new(&bytes),
        }
    }

    /// Its bytes (a [`KeyProvider`] wrapping it).
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    pub(super) fn cipher(&self) -> &Cipher {
        &self.cipher
    }
}

/// AES-256-GCM under one key, its key schedule expanded once (ring's implementation: the same
/// cipher and bytes as RustCrypto's `aes-gcm`, which stores first used, at about 60% of its
/// cost per short message here, and a long stream's read decrypts one per event).
#[derive(Clone)]
pub(super) struct Cipher(LessSafeKey);

impl Cipher {
    fn new(key: &[u8; 32]) -> Self {
        // AES-256 takes any 32 bytes: the only error `UnboundKey::new` has is another length.
        let key = UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte AES-256 key");
        Self(LessSafeKey::new(key))
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// A boxed future of a [`KeyProvider`].
pub type KeyFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, PiiError>> + Send + 'a>>;

/// Wraps and unwraps data keys with a key-encryption key that never reaches the database:
/// [`LocalKeyProvider`] (a key from the environment or a file), or a KMS or Vault client.
pub trait KeyProvider: fmt::Debug + Send + Sync + 'static {
    /// Encrypts a new data key for storage.
    fn wrap<'a>(&'a self, key: &'a DataKey) -> KeyFuture<'a, Vec<u8>>;

    /// Decrypts a stored data key.
    fn unwrap<'a>(&'a self, wrapped: &'a [u8]) -> KeyFuture<'a, DataKey>;

    /// How many data subjects' keys a store keeps in memory, unwrapped (a key is used for at
    /// most 30 s before the database is asked again). Size it to the subjects appended to or
    /// read within that time: beyond it, each append or read of another subject looks its key
    /// up in the database, and unwraps it here, again. [`DEFAULT_CACHED_KEYS`] unless the
    /// provider says otherwise.
    fn cached_keys(&self) -> NonZeroUsize {
        DEFAULT_CACHED_KEYS
    }
}

/// How many data subjects' keys a store keeps in memory unless its provider says otherwise
/// ([`KeyProvider::cached_keys`]).
pub const DEFAULT_CACHED_KEYS: NonZeroUsize = NonZeroUsize::new(10_000).expect("not zero");

/// A [`KeyProvider`] holding its key-encryption key in memory: 32 bytes, given as base64 in
/// the environment variable [`LocalKeyProvider::ENV`] or a file. Data keys are wrapped with
/// AES-256-GCM under it.
pub struct LocalKeyProvider {
    kek: Cipher,
    cached_keys: NonZeroUsize,
}

impl fmt::Debug for LocalKeyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKeyProvider").finish_non_exhaustive()
    }
}

impl LocalKeyProvider {
    /// The environment variable [`LocalKeyProvider::from_env`] reads.
    pub const ENV: &'static str = "FACTUM_KEY_ENCRYPTION_KEY";

    /// Associated data of every wrapped key: a wrapped key decrypts as nothing else.
    const AAD: &'static [u8] = b"factum data key v1";

    /// A provider with this key-encryption key.
    #[must_use]
    pub fn new(kek: [u8; 32]) -> Self {
        Self {
            kek: Cipher::new(&kek),
            cached_keys: DEFAULT_CACHED_KEYS,
        }
    }

    /// The same provider, with stores keeping up to `subjects` data subjects' keys in memory
    /// ([`KeyProvider::cached_keys`]; [`DEFAULT_CACHED_KEYS`] otherwise).
    #[must_use]
    pub fn with_cached_keys(mut self, subjects: NonZeroUsize) -> Self {
        self.cached_keys = subjects;
        self
    }

    /// A provider with a new random key-encryption key, for tests: what it wraps is lost with
    /// it.
    ///
    /// # Errors
    /// [`PiiError::Provider`] when the operating system has no randomness to give.
    pub fn ephemeral() -> Result<Self, PiiError> {
        Ok(Self::new(random()?))
    }

    /// A provider whose key-encryption key is `text`: 32 bytes in base64 (`openssl rand
    /// -base64 32` makes one).
    ///
    /// # Errors
    /// [`PiiError::InvalidKey`] when `text` is not base64 of 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, PiiError> {
        let bytes = BASE64.decode(text.trim()).map_err(|e| {
            PiiError::InvalidKey(format!(
                "not base64 ({e}): make one with `openssl rand -base64 32`"
            ))
        })?;
        let kek: [u8; 32] = bytes.try_into().map_err(|bytes: Vec<u8>| {
            PiiError::InvalidKey(format!(
                "{} bytes, not 32: make one with `openssl rand -base64 32`",
                bytes.len()
            ))
        })?;
        Ok(Self::new(kek))
    }

    /// A provider whose key-encryption key is in [`LocalKeyProvider::ENV`].
    ///
    /// # Errors
    /// [`PiiError::InvalidKey`] when the variable is not set or holds no base64 of 32 bytes.
    pub fn from_env() -> Result<Self, PiiError> {
        let text = std::env::var(Self::ENV).map_err(|_| {
            PiiError::InvalidKey(format!(
                "{} is not set: set it to 32 random bytes in base64 (`openssl rand -base64 32`)",
                Self::ENV
            ))
        })?;
        Self::from_base64(&text)
    }

    /// A provider whose key-encryption key is the base64 text of a file.
    ///
    /// # Errors
    /// [`PiiError::InvalidKey`] when the file does not read or holds no base64 of 32 bytes.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, PiiError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| PiiError::InvalidKey(format!("{}: {e}", path.display())))?;
        Self::from_base64(&text)
    }
}

impl KeyProvider for LocalKeyProvider {
    fn wrap<'a>(&'a self, key: &'a DataKey) -> KeyFuture<'a, Vec<u8>> {
        Box::pin(async move { encrypt(&self.kek, key.as_bytes(), Self::AAD) })
    }

    fn unwrap<'a>(&'a self, wrapped: &'a [u8]) -> KeyFuture<'a, DataKey> {
        Box::pin(async move {
            let bytes = decrypt(&self.kek, wrapped, Self::AAD).ok_or_else(|| {
                PiiError::Provider(
                    "a stored data key does not decrypt under this key-encryption key: it was wrapped under another one"
                        .to_owned(),
                )
            })?;
            let key: [u8; 32] = bytes.try_into().map_err(|_| {
                PiiError::Provider("a stored data key is not 32 bytes long".to_owned())
            })?;
            Ok(DataKey::from_bytes(key))
        })
    }

    fn cached_keys(&self) -> NonZeroUsize {
        self.cached_keys
    }
}

fn random<const N: usize>() -> Result<[u8; N], PiiError> {
    let mut bytes = [0; N];
    getrandom::fill(&mut bytes)
        .map_err(|e| PiiError::Provider(format!("no randomness from the operating system: {e}")))?;
    Ok(bytes)
}

/// `nonce || ciphertext` of `plain` under `cipher`, with a random nonce.
pub(super) fn encrypt(cipher: &Cipher, plain: &[u8], aad: &[u8]) -> Result<Vec<u8>, PiiError> {
    let nonce: [u8; NONCE] = random()?;
    let mut out = Vec::with_capacity(NONCE + plain.len() + TAG);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plain);
    let tag = cipher
        .0
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut out[NONCE..],
        )
        .map_err(|_| PiiError::Provider("AES-GCM refused to encrypt".to_owned()))?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// The inverse of [`encrypt`]; `None` when it does not authenticate.
fn decrypt(cipher: &Cipher, sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    let mut plain = sealed.to_vec();
    let length = open_in_place(cipher, &mut plain, aad)?.len();
    plain.copy_within(NONCE..NONCE + length, 0);
    plain.truncate(length);
    Some(plain)
}

/// Decrypts `nonce ‖ ciphertext ‖ tag` in place: the plaintext, inside `sealed`; `None` when
/// it is too short or does not authenticate.
pub(super) fn open_in_place<'b>(
    cipher: &Cipher,
    sealed: &'b mut [u8],
    aad: &[u8],
) -> Option<&'b mut [u8]> {
    if sealed.len() < NONCE + TAG {
        return None;
    }
    let (nonce, rest) = sealed.split_at_mut(NONCE);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    cipher
        .0
        .open_in_place(nonce, Aad::from(aad), rest)
        .ok()
        .map(|plain| &mut plain[..])
}

/// The length of AES-GCM's nonce and tag.
pub(super) const NONCE: usize = 12;
pub(super) const TAG: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_local_provider_unwraps_what_it_wrapped_and_nothing_else() {
        let provider = LocalKeyProvider::ephemeral().unwrap();
        let key = DataKey::generate().unwrap();
        let wrapped = provider.wrap(&key).await.unwrap();
        assert_eq!(
            provider.unwrap(&wrapped).await.unwrap().as_bytes(),
            key.as_bytes()
        );
        let other = LocalKeyProvider::ephemeral().unwrap();
        assert!(other.unwrap(&wrapped).await.is_err());
        assert!(LocalKeyProvider::from_base64("c2hvcnQ=").is_err());
        assert!(LocalKeyProvider::from_base64(&BASE64.encode([7; 32])).is_ok());
    }
}
