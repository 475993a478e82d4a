//! The front-end library: what a PV driver needs to talk to another domain, on Xen's ABI.
//!
//! - [`evtchn`]: event-channel operations and the per-port handler table the upcall
//!   dispatches through (Xen's 2-level pending/mask scan).
//! - [`grant`]: the domain's own grant table (granting and ending access) and the operations
//!   on other domains' grants (map, unmap, copy).
//! - [`ring`]: the byte rings with free-running indices that the console and xenstore pages
//!   hold, and [`console`] and [`xenbus`], the clients built on them.
//!
//! Everything here reaches the hypervisor and shared memory through small traits or raw
//! pointers given at construction, so it runs under `cargo test` against fakes; the kernel
//! supplies the hypercall page and the mapped pages.

pub mod console;
pub mod evtchn;
pub mod grant;
pub mod ring;
pub mod xenbus;

/// The waiting for a ring's peer ran out of time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitTimeout;

/// The event channel of a shared ring, as a ring client uses it.
pub trait RingEvents {
    /// Tells the other end that the ring changed.
    fn notify(&mut self);
    /// Waits until the other end has (probably) changed the ring, or gives up.
    fn wait(&mut self) -> Result<(), WaitTimeout>;
}
