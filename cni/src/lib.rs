//! The Manul CNI plugin (CNI spec 1.0): veth pairs, addresses from the node's
//! IPAM block, routes, and the WorkloadEndpoint write to Typha.
//!
//! It refuses to program policy itself: it only waits, when asked, until Felix
//! reports the endpoint programmed.
