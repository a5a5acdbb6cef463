//! The node's WireGuard key pair: the private key lives in one file on
//! the node (base64, as `wg genkey` writes it, mode 0600), created on first
//! use and read again at every start, so the public key other nodes hold
//! stays valid across restarts. The public key is what the Node resource
//! carries.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use boringtun::x25519::{PublicKey, StaticSecret};

use super::plan::Key;

/// Why the key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("WireGuard key file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "WireGuard key file {path} is readable by others (mode {mode:o}); it must be 0600 or stricter"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("WireGuard key file {path} does not hold a base64 32-byte key")]
    Malformed { path: PathBuf },
}

/// A private key and its public key.
#[derive(Clone)]
pub struct KeyPair {
    private: Key,
    public: Key,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public_base64())
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    pub fn from_private(private: Key) -> KeyPair {
        let secret = StaticSecret::from(private);
        let public = PublicKey::from(&secret).to_bytes();
        KeyPair {
            private: secret.to_bytes(),
            public,
        }
    }

    pub fn private(&self) -> &Key {
        &self.private
    }

    pub fn public(&self) -> &Key {
        &self.public
    }

    /// The public key as the Node annotation carries it.
    pub fn public_base64(&self) -> String {
        encode(&self.public)
    }
}

pub fn encode(key: &Key) -> String {
    STANDARD.encode(key)
}

/// A base64 key (as `wg` prints them); `None` unless it is 32 bytes.
pub fn decode(text: &str) -> Option<Key> {
    STANDARD.decode(text.trim()).ok()?.try_into().ok()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads the key at `path`, or creates one there (with its directory)
/// when there is none. A file others may read, or one that holds no key,
/// is an error: it is never replaced silently.
pub fn load_or_create(path: &Path) -> Result<KeyPair, KeyError> {
    match std::fs::File::open(path) {
        Ok(file) => {
            let mode = file.metadata().map_err(io(path))?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyError::Permissions {
                    path: path.to_path_buf(),
                    mode,
                });
            }
            let mut text = String::new();
            file.take(1024)
                .read_to_string(&mut text)
                .map_err(io(path))?;
            decode(&text)
                .map(KeyPair::from_private)
                .ok_or_else(|| KeyError::Malformed {
                    path: path.to_path_buf(),
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path),
        Err(e) => Err(io(path)(e)),
    }
}

fn create(path: &Path) -> Result<KeyPair, KeyError> {
    let mut private = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut private))
        .map_err(io(Path::new("/dev/urandom")))?;
    let pair = KeyPair::from_private(private);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
    }
    // Written whole under another name, then renamed: a crash leaves no
    // half-written key.
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    file.write_all(format!("{}\n", encode(pair.private())).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    Ok(pair)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_created_once_with_mode_0600_and_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wg/private.key");
        let first = load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = load_or_create(&path).unwrap();
        assert_eq!(first.public(), again.public());
        assert_eq!(first.private(), again.private());
        assert_ne!(first.public(), first.private());
        assert_eq!(decode(&first.public_base64()), Some(*first.public()));
    }

    #[test]
    fn the_public_key_is_curve25519s() {
        // RFC 7748, section 6.1: Alice's private and public keys.
        let private: Key = [
            0x77, 0x07, 0x6d, 0x0a, 0x73, 0x18, 0xa5, 0x7d, 0x3c, 0x16, 0xc1, 0x72, 0x51, 0xb2,
            0x66, 0x45, 0xdf, 0x4c, 0x2f, 0x87, 0xeb, 0xc0, 0x99, 0x2a, 0xb1, 0x77, 0xfb, 0xa5,
            0x1d, 0xb9, 0x2c, 0x2a,
        ];
        let public = KeyPair::from_private(private).public;
        assert_eq!(
            public
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
    }

    #[test]
    fn a_readable_or_malformed_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("private.key");
        std::fs::write(&path, "not a key\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            load_or_create(&path),
            Err(KeyError::Malformed { .. })
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create(&path).unwrap_err();
        assert!(err.to_string().contains("644"), "{err}");
        assert_eq!(decode("short"), None);
    }
}
