//! libvirt disk XML as Nova writes it: a typed `<disk>` config, built from a connection_info
//! and a device record the way Nova builds it, written and read back through quick-xml (which
//! does all the escaping).
//!
//! The config is checked before it is written and after it is read: a target name, serial
//! or WWN libvirt would refuse is an error here, not at `attachDeviceFlags` time.
//!
//! `config` holds the typed config and its checks, `nova` Nova's mapping from a
//! connection_info and a device record ([`DiskConfig::for_volume`]), and `wire` the XML
//! shape with [`DiskConfig::to_xml`] and [`DiskConfig::from_xml`].

mod config;
mod nova;
mod wire;

pub(crate) use config::is_uuid;
pub use config::{
    BlockIo, CacheMode, DetectZeroes, DiscardMode, DiskAddress, DiskAuth, DiskBus, DiskConfig,
    DiskDevice, DiskDriver, DiskEncryption, DiskSource, DiskTarget, EncryptionFormat, IoMode,
    IoTune, NetworkDisk, NetworkHost, NetworkProtocol, SecretType, Sgio,
};
