//! Encrypted volumes: the encryption metadata a storage service returns for a volume, the
//! keys behind it, and how the host opens it (os-brick's encryptors).
//!
//! - `metadata`: [`EncryptionMetadata`] (provider, cipher, key size, control location,
//!   key id) parsed from what Cinder returns, with every provider spelling os-brick accepts.
//! - `keys`: the [`KeyManager`] seam, the [`EncryptionKey`] it returns and the passphrase
//!   cryptsetup and QEMU get from it (derived as os-brick derives it, so volumes an
//!   OpenStack cloud encrypted open here), and [`FileKeyManager`], a directory of key files.

mod keys;
mod metadata;

pub use keys::{EncryptionKey, FileKeyManager, KeyKind, KeyManager};
pub use metadata::{ControlLocation, EncryptionMetadata, EncryptionProvider};
