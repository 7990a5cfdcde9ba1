//! Being built; see the open issues.
