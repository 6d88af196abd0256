//! The Linux system calls Veil's proxies make that no safe crate offers.
//!
//! This is the one crate of the workspace that is not `forbid(unsafe_code)`:
//! each `unsafe` block below says why it is sound. Everything else (original
//! destination, socket options) goes through `nix`'s safe wrappers.
#![deny(unsafe_code)]

mod pages;
mod sched;

pub use pages::{release_binary_pages, PagesError};

pub use sched::{set_latency_slice, SliceError, MAX_SLICE_US, MIN_SLICE_US};
