//! cairnctl's tests, one test binary (link time matters on two cores):
//! - `txn_parse`, `key_range`, `units`: the pure parsers, table-driven;
//! - `module`: componentizing, hashing and chunking plugin files;
//! - `cli`: the built `cairnctl` binary against `fake_server`, an in-process tonic server that
//!   records what arrives.

mod cli;
mod fake_server;
mod key_range;
mod module;
mod txn_parse;
mod units;
