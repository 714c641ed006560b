//! Durable message history (in progress).
