//! Jobdock's engine: the HTTP API, the store, and (in later modules) dispatch and supervision
//! of runs. `main.rs` is a thin shell around [`cli::run`].

pub mod api;
pub mod auth;
pub mod backends;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod egress;
pub mod json;
pub mod metrics;
pub mod monitor;
pub mod runner;
pub mod schedule;
pub mod service;
pub mod startup;
pub mod store;
pub mod telemetry;
