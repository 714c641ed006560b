//! The load generator behind `rchat bench` (in progress).
