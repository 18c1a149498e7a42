//! Shared test fixtures for every crate's tests: container images the tests build themselves,
//! fresh PostgreSQL databases, and a running `jobdock` binary driven over HTTP.

pub mod app;
pub mod docker_proxy;
pub mod images;
pub mod postgres;
pub mod swarm;

pub use app::{TestApp, TestAppBuilder};
