//! TEST STAND-IN for Mesos master, agent and Mesos-DNS. Never shipped; see README.md.
//! It reads the files the roles write, rejects what real Mesos would reject, elects a leader
//! through the real ZooKeeper ensemble and serves the HTTP/DNS surfaces the provisioner and the
//! lab health checks read. It runs no tasks and has no frameworks.

pub mod agent;
pub mod dns;
pub mod election;
pub mod flags;
pub mod framework;
pub mod http;
pub mod master;
pub mod tls;
pub mod zkurl;
