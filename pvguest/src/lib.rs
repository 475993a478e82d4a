//! pvguest: a small guest kernel written against `hypercall-abi`.
#![cfg_attr(not(test), no_std)]
