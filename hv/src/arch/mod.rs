//! Hardware layers; x86_64 is the only one.
pub mod x86_64;
