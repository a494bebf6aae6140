//! The operation frame: what every connect, disconnect and extend of every protocol does the
//! same way, written once.
//!
//! A protocol implements the crate-private [`Driver`] trait: its properties type, how to
//! find them in a connection_info, and the protocol's own steps, each written against an
//! [`Operation`]. [`Framed`] turns a driver into the public [`Connector`]. The frame alone
//!
//! - extracts the protocol's properties (the mismatch error when the connection_info is of
//!   another protocol) and refuses a device record of another protocol;
//! - opens the tracing span of the operation, with the same fields for every protocol
//!   (`protocol`, `volume`, `target`, and the options of a disconnect);
//! - sets the one deadline the whole operation shares, and the cleanup budget after a failure;
//! - takes the volume lock, so one operation of a volume runs at a time on this host (a
//!   lock still held by another at the deadline fails the operation with
//!   [`Error::LockTimeout`]);
//! - makes the connector's cancel the current one of the operation ([`cancel`]), and
//!   reports an operation it stopped as [`Error::Cancelled`];
//! - logs the operation's end with its duration;
//! - checks a device answers I/O (`check_valid_device`).
//!
//! Rules that every operation of every protocol must obey belong here.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::connector::{Connector, ConnectorOptions, DisconnectOptions, Disconnected};
use crate::devices::block;
use crate::error::{Error, Result};
use crate::model::connection::{ConnectionInfo, Protocol};
use crate::model::record::DeviceRecord;
use crate::platform::cancel;
use crate::platform::cmd::{Cancel, CommandRunner};
use crate::platform::host::Host;
use crate::platform::lock::{LockDir, LockGuard, LockMode};

/// What the frame needs to know of a protocol's properties.
pub(crate) trait VolumeProps: Sync {
    /// `volume_id`, when the connection_info has one.
    fn volume_id(&self) -> Option<&str>;
    /// The name of the volume's lock (and registry entry).
    fn volume_key(&self) -> String;
    /// The target, as the span shows it (a portal and IQN, an NQN, an image).
    fn target(&self) -> String;
}

/// One protocol's steps, framed by [`Framed`].
pub(crate) trait Driver: Send + Sync + fmt::Debug {
    /// The protocol's parsed `data`.
    type Props: VolumeProps;

    /// The protocol served.
    fn protocol(&self) -> Protocol;

    /// The connector's options.
    fn options(&self) -> &ConnectorOptions;

    /// The properties in `info`, when it is of this driver's protocol.
    fn props<'a>(&self, info: &'a ConnectionInfo) -> Option<&'a Self::Props>;

    /// Whether `record`, a record a connect returned, is of a volume this driver serves.
    fn accepts_record(&self, record: &DeviceRecord) -> bool {
        record.protocol == Some(self.protocol())
    }

    /// Attaches the volume.
    fn connect(&self, op: &Operation<'_>, props: &Self::Props) -> Result<DeviceRecord>;

    /// Detaches the volume; `record` has passed [`Driver::accepts_record`].
    fn disconnect(
        &self,
        op: &Operation<'_>,
        props: &Self::Props,
        record: Option<&DeviceRecord>,
        options: DisconnectOptions,
    ) -> Result<()>;

    /// Makes the host see the volume's new size; returns it in bytes.
    fn extend(&self, op: &Operation<'_>, props: &Self::Props) -> Result<u64>;

    /// The volume's device paths that exist now.
    fn volume_paths(&self, op: &Operation<'_>, props: &Self::Props) -> Result<Vec<PathBuf>>;

    /// Where this protocol's device links appear, if anywhere.
    fn search_path(&self, _host: &Host) -> Option<PathBuf> {
        None
    }

    /// Every volume of this protocol under the search path.
    fn all_volumes(&self, _op: &Operation<'_>) -> Result<Vec<PathBuf>> {
        Ok(Vec::new())
    }
}

/// What kind of operation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OperationKind {
    Connect,
    Disconnect,
    Extend,
    /// A read-only query (volume paths, available volumes).
    Query,
}

impl OperationKind {
    fn span_name(self) -> &'static str {
        match self {
            OperationKind::Connect => "connect_volume",
            OperationKind::Disconnect => "disconnect_volume",
            OperationKind::Extend => "extend_volume",
            OperationKind::Query => "query",
        }
    }

    /// The `phase` of the event that ends a successful operation.
    fn done(self) -> &'static str {
        match self {
            OperationKind::Connect => "connected",
            OperationKind::Disconnect => "disconnected",
            OperationKind::Extend => "extended",
            OperationKind::Query => "answered",
        }
    }
}

/// One running operation: its options, host, deadline and start.
pub(crate) struct Operation<'a> {
    /// The connector's options.
    pub opts: &'a ConnectorOptions,
    /// The connector's lock directory.
    pub locks: &'a LockDir,
    /// When the operation started.
    pub started: Instant,
    /// The one deadline every step of the operation shares.
    pub deadline: Instant,
    /// What may stop the operation early (the connector's
    /// [`ConnectorOptions::cancel`]); the frame makes it the current cancel of the
    /// operation's thread ([`cancel::enter`]), where the waits beneath read it.
    pub cancel: Option<&'a Cancel>,
}

impl<'a> Operation<'a> {
    fn start(opts: &'a ConnectorOptions, locks: &'a LockDir) -> Self {
        let started = Instant::now();
        Operation {
            opts,
            locks,
            started,
            deadline: started + opts.operation_timeout,
            cancel: opts.cancel.as_ref(),
        }
    }

    /// True once the operation's cancel has fired.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_some_and(Cancel::is_cancelled)
    }

    /// The operation's end as the caller sees it: a failure once the cancel fired is
    /// [`Error::Cancelled`] with the failure as its cause (the steps beneath report what
    /// the cancel stopped: a wait, a command, or the failure that followed it).
    fn outcome<T>(&self, kind: OperationKind, result: Result<T>) -> Result<T> {
        match result {
            Err(e) if self.is_cancelled() && !matches!(e, Error::Cancelled { .. }) => {
                Err(Error::Cancelled {
                    operation: kind.span_name(),
                    elapsed: self.started.elapsed(),
                    cause: Some(Box::new(e)),
                })
            }
            r => r,
        }
    }

    /// The host.
    pub fn host(&self) -> &'a Host {
        &self.opts.context.host
    }

    /// The command runner.
    pub fn runner(&self) -> &'a dyn CommandRunner {
        &*self.opts.context.runner
    }

    /// The deadline of cleanup after a failure, counted from now: the operation's own
    /// deadline may already have passed.
    pub fn cleanup_deadline(&self) -> Instant {
        Instant::now() + self.opts.cleanup_timeout
    }

    /// Milliseconds since the operation started.
    pub fn elapsed_ms(&self) -> u64 {
        ms(self.started.elapsed())
    }

    /// Takes a lock of `locks` under `key`, waiting for it at most until the operation's
    /// deadline ([`Error::LockTimeout`] after that).
    pub fn lock(&self, key: &str, mode: LockMode) -> Result<LockGuard> {
        self.locks.lock_until(key, mode, self.deadline)
    }
}

/// Milliseconds of a duration, for log fields.
pub(crate) fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// A connector: the operation frame around one protocol's driver.
pub(crate) struct Framed<D> {
    driver: D,
    locks: LockDir,
}

impl<D: Driver> Framed<D> {
    /// Frames `driver`.
    pub fn new(driver: D) -> Self {
        Framed {
            locks: driver.options().locks(),
            driver,
        }
    }

    fn opts(&self) -> &ConnectorOptions {
        self.driver.options()
    }

    fn props<'a>(&self, info: &'a ConnectionInfo) -> Result<&'a D::Props> {
        self.driver
            .props(info)
            .ok_or_else(|| info.mismatch(self.driver.protocol()))
    }

    /// Runs `body` as one operation of `kind` on the volume of `props`: in its span, under
    /// its deadline and (for changes) its volume lock, with its end logged.
    fn run<T>(
        &self,
        kind: OperationKind,
        props: &D::Props,
        options: Option<DisconnectOptions>,
        body: impl FnOnce(&Operation<'_>) -> Result<T>,
    ) -> Result<T> {
        let span = tracing::info_span!(
            "operation",
            op = kind.span_name(),
            protocol = %self.driver.protocol(),
            volume = props.volume_id(),
            target = %props.target(),
            multipath = self.opts().multipath.is_on(),
            force = options.map(|o| o.force),
            ignore_errors = options.map(|o| o.ignore_errors),
        );
        let _entered = span.enter();
        let op = Operation::start(self.opts(), &self.locks);
        let _cancel = cancel::enter(op.cancel.cloned());
        if op.is_cancelled() {
            tracing::info!("cancelled before it started");
            return Err(Error::Cancelled {
                operation: kind.span_name(),
                elapsed: op.started.elapsed(),
                cause: None,
            });
        }
        let result = (|| {
            let _volume = if kind != OperationKind::Query {
                Some(op.lock(&props.volume_key(), LockMode::Exclusive)?)
            } else {
                None
            };
            body(&op)
        })();
        let result = op.outcome(kind, result);
        match &result {
            Ok(_) if kind != OperationKind::Query => tracing::info!(
                phase = kind.done(),
                elapsed_ms = op.elapsed_ms(),
                "volume {}",
                kind.done()
            ),
            Ok(_) => {}
            Err(e @ Error::Cancelled { .. }) => {
                tracing::warn!(elapsed_ms = op.elapsed_ms(), error = %e.chain(), "{} cancelled", kind.span_name())
            }
            Err(e) => {
                tracing::debug!(elapsed_ms = op.elapsed_ms(), error = %e.chain(), "{} failed", kind.span_name())
            }
        }
        result
    }
}

impl<D: Driver> fmt::Debug for Framed<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("driver", &self.driver)
            .finish()
    }
}

impl<D: Driver> Connector for Framed<D> {
    fn protocol(&self) -> Protocol {
        self.driver.protocol()
    }

    fn connect_volume(&self, info: &ConnectionInfo) -> Result<DeviceRecord> {
        let props = self.props(info)?;
        self.run(OperationKind::Connect, props, None, |op| {
            let record = self.driver.connect(op, props)?;
            tracing::info!(path = %record.path.display(), "device");
            Ok(record)
        })
    }

    fn disconnect_volume(
        &self,
        info: &ConnectionInfo,
        device: Option<&DeviceRecord>,
        options: DisconnectOptions,
    ) -> Result<Disconnected> {
        let props = self.props(info)?;
        // os-brick's device_info names no protocol: it is the connection_info's.
        let filled;
        let device = match device {
            Some(r) if r.protocol.is_none() => {
                filled = DeviceRecord {
                    protocol: Some(self.driver.protocol()),
                    ..r.clone()
                };
                Some(&filled)
            }
            other => other,
        };
        if let Some(r) = device {
            if !self.driver.accepts_record(r) {
                return Err(Error::InvalidDeviceRecord {
                    reason: format!(
                        "the record is of a {} volume",
                        r.protocol
                            .map_or_else(|| "?".to_string(), |p| p.to_string())
                    ),
                });
            }
        }
        self.run(OperationKind::Disconnect, props, Some(options), |op| {
            match self.driver.disconnect(op, props, device, options) {
                Ok(()) => Ok(Disconnected::default()),
                // With ignore_errors the failures force carried on past are reported,
                // not raised (os-brick's meaning); a cancelled disconnect is no success.
                Err(Error::DisconnectIncomplete { failures })
                    if options.ignore_errors && !op.is_cancelled() =>
                {
                    tracing::warn!(
                        failures = failures.len(),
                        "errors while removing the volume were ignored; leftovers may remain"
                    );
                    Ok(Disconnected { failures })
                }
                Err(e) => Err(e),
            }
        })
    }

    fn extend_volume(&self, info: &ConnectionInfo) -> Result<u64> {
        let props = self.props(info)?;
        self.run(OperationKind::Extend, props, None, |op| {
            let size = self.driver.extend(op, props)?;
            tracing::info!(size, "size");
            Ok(size)
        })
    }

    fn get_volume_paths(&self, info: &ConnectionInfo) -> Result<Vec<PathBuf>> {
        let props = self.props(info)?;
        self.run(OperationKind::Query, props, None, |op| {
            self.driver.volume_paths(op, props)
        })
    }

    fn get_search_path(&self) -> Option<PathBuf> {
        self.driver.search_path(&self.opts().context.host)
    }

    fn get_all_available_volumes(&self) -> Result<Vec<PathBuf>> {
        let op = Operation::start(self.opts(), &self.locks);
        let _cancel = cancel::enter(op.cancel.cloned());
        self.driver.all_volumes(&op)
    }

    fn check_valid_device(&self, path: &Path) -> Result<()> {
        block::check_readable(&self.opts().context.host.map_dev_path(path))
    }
}
