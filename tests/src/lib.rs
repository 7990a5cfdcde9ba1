//! Cross-crate and end-to-end tests for crowdstore live in `tests/`.
