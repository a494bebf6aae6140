//! The protocol-keyed connector factory: the one place that knows every protocol.

use std::sync::Arc;

use crate::connector::{Connector, ConnectorOptions, Framed};
use crate::error::Result;
use crate::iscsi::IscsiDriver;
use crate::local::LocalDriver;
use crate::model::connection::Protocol;
use crate::nvme::NvmeDriver;
use crate::platform::cancel::CancelRunner;
use crate::rbd::RbdDriver;

/// Makes the connector for `protocol`.
///
/// `iser` gives the iSCSI connector with the `iser` iface.
pub fn connector_for(
    protocol: Protocol,
    mut options: ConnectorOptions,
) -> Result<Box<dyn Connector>> {
    // With a cancel, every command of the connector's operations may be stopped by it.
    if options.cancel.is_some() {
        options.context.runner = Arc::new(CancelRunner::new(options.context.runner.clone()));
    }
    match protocol {
        Protocol::Iscsi | Protocol::Iser => {
            Ok(Box::new(Framed::new(IscsiDriver::new(protocol, options)?)))
        }
        Protocol::NvmeOf => Ok(Box::new(Framed::new(NvmeDriver::new(options)?))),
        Protocol::Rbd => Ok(Box::new(Framed::new(RbdDriver::new(options)))),
        Protocol::Local => Ok(Box::new(Framed::new(LocalDriver::new(options)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factory_by_protocol() {
        let c = connector_for(Protocol::Iscsi, ConnectorOptions::new()).unwrap();
        assert_eq!(c.protocol(), Protocol::Iscsi);
        let c = connector_for(Protocol::Iser, ConnectorOptions::new()).unwrap();
        assert_eq!(c.protocol(), Protocol::Iser);
        let c = connector_for(Protocol::NvmeOf, ConnectorOptions::new()).unwrap();
        assert_eq!(c.protocol(), Protocol::NvmeOf);
        let c = connector_for(Protocol::Rbd, ConnectorOptions::new()).unwrap();
        assert_eq!(c.protocol(), Protocol::Rbd);
        let c = connector_for(Protocol::Local, ConnectorOptions::new()).unwrap();
        assert_eq!(c.protocol(), Protocol::Local);
    }
}
