//! Test images, built locally (no registry is reachable).
