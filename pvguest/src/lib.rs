//! pvguest: a small guest kernel written against `hypercall-abi`.
//!
//! The library holds the portable parts, which run their unit tests on the host: command-line
//! parsing, console line formatting, selftest bookkeeping, benchmark lines, page-table
//! arithmetic, the frame allocator and the PV clock arithmetic. The bare-metal kernel (entry
//! code, traps, paging through hypercalls, the selftest and the benchmarks themselves) lives
//! in the binary's `kernel` module.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod backend;
pub mod bench;
pub mod cmdline;
pub mod echo;
pub mod frames;
pub mod front;
pub mod hostile;
pub mod line;
pub mod paging;
pub mod pair;
pub mod selftest;
pub mod share;
pub mod time;
pub mod xenbus_test;
pub mod xenstore;
