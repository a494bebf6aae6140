//! The kernel's block devices, whatever the protocol that made them: block devices in
//! sysfs, SCSI devices, dm-multipath maps and MD RAID arrays.

pub(crate) mod block;
pub(crate) mod md;
pub(crate) mod multipath;
pub(crate) mod scsi;
