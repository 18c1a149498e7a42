//! Shared test fixtures for every crate's tests: container images the tests build themselves,
//! fresh PostgreSQL databases, a running `jobdock` binary driven over HTTP, a reader of its
//! metrics, a local receiver of alerts, and a private container registry.

pub mod app;
pub mod docker_proxy;
pub mod images;
pub mod metrics;
pub mod postgres;
pub mod registry;
pub mod swarm;
pub mod webhook;

pub use app::{TestApp, TestAppBuilder};
