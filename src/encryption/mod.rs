//! Encrypted volumes: the encryption metadata a storage service returns for a volume, the
//! keys behind it, and how the host opens it (os-brick's encryptors).
//!
//! - `metadata`: [`EncryptionMetadata`] (provider, cipher, key size, control location,
//!   key id) parsed from what Cinder returns, with every provider spelling os-brick accepts.
//! - `keys`: the [`KeyManager`] seam, the [`EncryptionKey`] it returns and the passphrase
//!   cryptsetup and QEMU get from it (derived as os-brick derives it, so volumes an
//!   OpenStack cloud encrypted open here), and [`FileKeyManager`], a directory of key files.
//! - `volume`: the host encryptors, [`open_volume`], [`close_volume`] and
//!   [`extend_volume`] (os-brick's LUKS, LUKS2 and plain dm-crypt encryptors through
//!   `cryptsetup`, the key on its stdin), over `cryptsetup` (the command lines and the
//!   `blkid` probe) and `mapping` (dm-crypt mappings in sysfs and the names os-brick gives
//!   them).
//! - `connector`: [`EncryptedConnector`], a protocol's connector and the encryption of its
//!   volume in one: connect opens, disconnect closes, extend resizes.
//!
//! # The decrypted device
//!
//! os-brick's encryptors point the volume's device link (the connector's `path`) at the
//! decrypted device (`ln -sf /dev/mapper/crypt-X PATH`), so a caller that hands the guest
//! `path` hands it the plaintext. hostbrick changes no udev link: the record keeps `path`
//! (the encrypted device, which the connector detaches) and gains
//! [`DeviceRecord::encryption`](crate::DeviceRecord::encryption); hand the guest
//! [`DeviceRecord::guest_path`](crate::DeviceRecord::guest_path).

mod connector;
mod cryptsetup;
mod keys;
mod mapping;
mod metadata;
mod volume;

pub use connector::EncryptedConnector;
pub use keys::{EncryptionKey, FileKeyManager, KeyKind, KeyManager};
pub use metadata::{ControlLocation, EncryptionMetadata, EncryptionProvider};
pub use volume::{close_volume, extend_volume, open_volume};
