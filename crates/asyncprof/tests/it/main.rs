//! Integration tests of the hooks tier: known-truth workloads, read back from the run file.

mod beside_pprof;
mod blocked;
mod busy;
mod cpu;
mod diskfull;
mod dropin;
mod edges;
mod eintr;
mod filelimit;
mod footprint;
mod gaps;
mod idle;
mod killed;
mod macro_main;
mod polls;
mod process;
mod queues;
mod sched;
mod security;
mod stalls;
mod subscriber;
mod support;
mod syscalls;
