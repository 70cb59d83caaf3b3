//! The russh implementation of [`Connector`](super::Connector). (Work in progress.)

/// Connector-wide settings.
#[derive(Clone, Debug, Default)]
pub struct SshOptions {}

/// Opens russh sessions.
#[derive(Clone, Debug, Default)]
pub struct SshConnector {
    pub options: SshOptions,
}
