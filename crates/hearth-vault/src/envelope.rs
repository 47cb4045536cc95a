//! Envelope encryption, as pure functions of a key ring and bytes. Each
//! credential version gets a fresh random 256-bit data key; the files are
//! sealed with it (AES-256-GCM, random 96-bit nonce), and the data key is
//! sealed ("wrapped") with the ring's active key-encryption key. Rotation
//! rewraps the data key only; the files' ciphertext never changes.
//!
//! Associated data binds every ciphertext to its row: the files' to
//! (tenant, user, provider, version), the wrapped key's to the same and the
//! KEK version. So a ciphertext copied to another user's, provider's or
//! version's row, or relabelled with another KEK version, fails to open.
//!
//! The wrapped key is stored as the KEK's 8-byte fingerprint followed by
//! the AES-GCM output (32 bytes of key, 16 of tag): a key file replaced by
//! another one is then told apart from a tampered row.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore as _;
use zeroize::Zeroizing;

use crate::keyring::{Kek, KeyRing, Lookup};
use crate::{CredentialId, Part, Secret, VaultError};

const NONCE_LEN: usize = 12;
const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
const FINGERPRINT_LEN: usize = 8;
const WRAPPED_LEN: usize = FINGERPRINT_LEN + KEY_LEN + TAG_LEN;

/// One sealed credential version: no plaintext, no usable key.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub kek_version: u32,
    /// The KEK's fingerprint, then the data key sealed under the KEK.
    pub wrapped_key: Vec<u8>,
    pub key_nonce: Vec<u8>,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("kek_version", &self.kek_version)
            .field(
                "ciphertext",
                &format_args!("{} bytes", self.ciphertext.len()),
            )
            .finish_non_exhaustive()
    }
}

/// Seals `plaintext` as credential `id` under the ring's active KEK.
pub fn seal(ring: &KeyRing, id: &CredentialId, plaintext: &Secret) -> Result<Sealed, VaultError> {
    let mut data_key = Zeroizing::new([0u8; KEY_LEN]);
    rand::rngs::OsRng.fill_bytes(data_key.as_mut());
    let nonce = random_nonce();
    let ciphertext = encrypt(data_key.as_ref(), &nonce, plaintext.expose(), &data_aad(id))
        .ok_or_else(|| VaultError::Invalid {
            owner: id.owner.clone(),
            why: "the files are too large for one AES-GCM message".to_owned(),
        })?;
    let (wrapped_key, key_nonce) = wrap(ring, id, &data_key)?;
    Ok(Sealed {
        kek_version: ring.active(),
        wrapped_key,
        key_nonce,
        nonce: nonce.to_vec(),
        ciphertext,
    })
}

/// Opens credential `id`: the plaintext exactly as sealed, or why not.
pub fn open(ring: &KeyRing, id: &CredentialId, sealed: &Sealed) -> Result<Secret, VaultError> {
    let data_key = unwrap(ring, id, sealed)?;
    let tampered = || VaultError::Tampered {
        credential: id.clone(),
        part: Part::Ciphertext,
    };
    let nonce: [u8; NONCE_LEN] = sealed.nonce.as_slice().try_into().map_err(|_| tampered())?;
    let plain = decrypt(data_key.as_ref(), &nonce, &sealed.ciphertext, &data_aad(id))
        .ok_or_else(tampered)?;
    Ok(Secret::from(plain))
}

/// `sealed`'s data key, unwrapped with `from`, rewrapped under `to`'s
/// active KEK (usually the same ring): the new wrapped key and its nonce.
/// The ciphertext is left as it is.
pub fn rewrap(
    from: &KeyRing,
    to: &KeyRing,
    id: &CredentialId,
    sealed: &Sealed,
) -> Result<(Vec<u8>, Vec<u8>), VaultError> {
    let data_key = unwrap(from, id, sealed)?;
    wrap(to, id, &data_key)
}

fn wrap(
    ring: &KeyRing,
    id: &CredentialId,
    data_key: &[u8; KEY_LEN],
) -> Result<(Vec<u8>, Vec<u8>), VaultError> {
    let kek = ring.active_key()?;
    let nonce = random_nonce();
    let aad = key_aad(id, ring.active());
    let sealed =
        encrypt(kek.bytes(), &nonce, data_key, &aad).ok_or_else(|| VaultError::Invalid {
            owner: id.owner.clone(),
            why: "its data key could not be wrapped".to_owned(),
        })?;
    let mut wrapped = kek.fingerprint().to_vec();
    wrapped.extend_from_slice(&sealed);
    Ok((wrapped, nonce.to_vec()))
}

fn unwrap(
    ring: &KeyRing,
    id: &CredentialId,
    sealed: &Sealed,
) -> Result<Zeroizing<[u8; KEY_LEN]>, VaultError> {
    let kek = kek_for(ring, id, sealed.kek_version)?;
    let tampered = || VaultError::Tampered {
        credential: id.clone(),
        part: Part::WrappedKey,
    };
    if sealed.wrapped_key.len() != WRAPPED_LEN {
        return Err(tampered());
    }
    let (fingerprint, body) = sealed.wrapped_key.split_at(FINGERPRINT_LEN);
    if fingerprint != kek.fingerprint() {
        return Err(VaultError::WrongKey {
            credential: id.clone(),
            kek_version: sealed.kek_version,
            path: ring.path().to_owned(),
        });
    }
    let nonce: [u8; NONCE_LEN] = sealed
        .key_nonce
        .as_slice()
        .try_into()
        .map_err(|_| tampered())?;
    let aad = key_aad(id, sealed.kek_version);
    let plain = Zeroizing::new(decrypt(kek.bytes(), &nonce, body, &aad).ok_or_else(tampered)?);
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    if plain.len() != KEY_LEN {
        return Err(tampered());
    }
    key.copy_from_slice(&plain);
    Ok(key)
}

fn kek_for<'r>(ring: &'r KeyRing, id: &CredentialId, version: u32) -> Result<&'r Kek, VaultError> {
    match ring.lookup(version) {
        Lookup::Key(kek) => Ok(kek),
        Lookup::Retired => Err(VaultError::RetiredKey {
            credential: id.clone(),
            kek_version: version,
            path: ring.path().to_owned(),
        }),
        Lookup::Missing => Err(VaultError::MissingKey {
            credential: id.clone(),
            kek_version: version,
            path: ring.path().to_owned(),
        }),
    }
}

fn random_nonce() -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    nonce
}

fn encrypt(key: &[u8], nonce: &[u8; NONCE_LEN], msg: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    let cipher = Aes256Gcm::new_from_slice(key).ok()?;
    cipher
        .encrypt(Nonce::from_slice(nonce), Payload { msg, aad })
        .ok()
}

/// `None` when the tag does not match: wrong key, changed bytes or
/// different associated data.
fn decrypt(key: &[u8], nonce: &[u8; NONCE_LEN], msg: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    let cipher = Aes256Gcm::new_from_slice(key).ok()?;
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg, aad })
        .ok()
}

/// The files' associated data: a label, then tenant, user and provider
/// (each length-prefixed, so no two triples encode alike) and the version.
fn data_aad(id: &CredentialId) -> Vec<u8> {
    let mut aad = b"hearth-vault/v1/files\0".to_vec();
    push_owner(&mut aad, id);
    aad
}

/// The wrapped key's: the same, another label, and the KEK version.
fn key_aad(id: &CredentialId, kek_version: u32) -> Vec<u8> {
    let mut aad = b"hearth-vault/v1/data-key\0".to_vec();
    push_owner(&mut aad, id);
    aad.extend_from_slice(&kek_version.to_be_bytes());
    aad
}

fn push_owner(aad: &mut Vec<u8>, id: &CredentialId) {
    for part in [
        id.owner.tenant.as_str(),
        id.owner.user.as_str(),
        id.owner.provider.as_str(),
    ] {
        aad.extend_from_slice(&(part.len() as u16).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad.extend_from_slice(&id.version.to_be_bytes());
}
