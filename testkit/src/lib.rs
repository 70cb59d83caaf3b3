//! TEST-ONLY code, never shipped.
//!
//! - [`framework`]: a small Mesos v1 scheduler (HTTP API) with a blocking API, used by the
//!   end-to-end tests to prove a real Mesos cluster runs tasks (and by `mesos-testframework`).
//! - `mesos-standin dns` ([`dns`]): a stand-in for Mesos-DNS, which has no obtainable build. It
//!   reads Mesos-DNS's config.json and answers A queries from the real masters' state.
//! - [`fake`]: a ZooKeeper member and an HTTP server with fixed answers on 127.0.0.1, for the
//!   hermetic tests of the gate program (`cluster_core::gates`) and the roles that run it.
//! - [`fuzz`]: the fuzz suites' harness (proptest, seeded, with a hang guard; docs/fuzzing.md).

pub mod dns;
pub mod election;
pub mod fake;
pub mod framework;
pub mod fuzz;
pub mod http;
pub mod tls;
pub mod zkurl;

/// The version the Mesos-DNS stand-in reports.
pub const VERSION: &str = "0.0.0-standin";
