//! The iptables dataplane: renders per-endpoint, per-policy and dispatch
//! chains plus IP sets, and applies them in atomic `iptables-restore` and
//! `ipset restore` transactions.
//!
//! It refuses to depend on `felix`, and never flushes tables or chains that
//! other software owns.
