//! How hostbrick touches the host, whatever the protocol: the host handle (every path),
//! the command runner (every external program), udev events and device waits, cross-process
//! locks, and the attachment registry.

pub(crate) mod cmd;
pub(crate) mod host;
pub(crate) mod lock;
pub(crate) mod registry;
pub(crate) mod uevent;
pub(crate) mod wait;
