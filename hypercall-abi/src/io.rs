//! Shared-memory I/O protocols between front- and back-end drivers: the
//! generic ring, the console and xenstore rings, and the block and network
//! device request formats.

pub mod blkif;
pub mod console;
pub mod netif;
pub mod ring;
pub mod xs_wire;
