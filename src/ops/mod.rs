//! One module per command: the logic of each `mlv` command as a library function that takes
//! a repository and options and returns a report for the CLI to print.

pub mod add;
pub mod bases;
pub mod branch;
pub mod checkout;
pub mod clone;
pub mod commit;
pub mod config;
pub mod diff;
pub mod du;
pub mod fetch;
pub mod fsck;
pub mod gc;
pub mod gc_aggressive;
pub mod gc_remote;
pub mod log;
pub mod push;
pub mod read;
pub mod remote;
pub mod status;
pub mod tensors;
