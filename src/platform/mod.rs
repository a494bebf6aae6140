//! How hostbrick touches the host, whatever the protocol: the host handle (every path),
//! the command runner (every external program), udev events and device waits, cross-process
//! locks, the attachment registry, and the private state directory they live in.

pub(crate) mod cancel;
pub(crate) mod cmd;
pub(crate) mod host;
pub(crate) mod lock;
pub(crate) mod registry;
pub(crate) mod state;
pub(crate) mod uevent;
pub(crate) mod wait;
