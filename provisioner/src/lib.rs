//! `provisioner`: installs and converges an Apache Mesos stack over SSH.
//!
//! Pipeline (one direction, one type per stage), see ARCHITECTURE.md:
//! CLI -> raw -> resolve -> model -> plan -> exec -> RunEvent -> report.

pub mod cli;
pub mod config;
pub mod day2;
pub mod diag;
pub mod error;
pub mod exec;
pub mod facts;
pub mod history;
pub mod lab;
pub mod manual;
pub mod model;
pub mod modules;
pub mod operate;
pub mod plan;
pub mod raw;
pub mod report;
pub mod resolve;
pub mod run;
pub mod secret;
pub mod secrets;
pub mod shell;
pub mod stack;
pub mod state;
pub mod template;
pub mod transport;
pub mod yaml;
