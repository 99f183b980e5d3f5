//! Shared helpers for examples and tests.
