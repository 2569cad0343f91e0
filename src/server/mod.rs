//! The sidecar daemon HTTP API.
