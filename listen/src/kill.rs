//! Closing a client's whole connection from a service: each connection of
//! the client listener registers a [`KillSwitch`] under its peer address,
//! and a service that decides a client must go (a Sync stream that stopped
//! reading, `fanout`) flips it; the connection's next read or write fails,
//! which ends it and frees everything its streams held. Needed because a
//! stream whose client keeps its HTTP/2 window shut is never polled again:
//! it cannot end itself.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Context;

use futures::task::AtomicWaker;

/// One connection's switch.
#[derive(Debug, Default)]
pub struct KillSwitch {
    killed: AtomicBool,
    waker: AtomicWaker,
}

impl KillSwitch {
    /// Ends the connection: its next (or pending) read or write fails.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Whether the connection was killed; wakes `cx` when it is later.
    pub fn killed(&self, cx: &Context<'_>) -> bool {
        self.waker.register(cx.waker());
        self.killed.load(Ordering::Acquire)
    }
}

/// The switches of a listener's open connections, by peer address.
#[derive(Debug, Default)]
pub struct Connections {
    switches: Mutex<HashMap<SocketAddr, Weak<KillSwitch>>>,
}

/// A connection's entry: removed when the connection is dropped.
#[derive(Debug)]
pub struct Registered {
    pub switch: Arc<KillSwitch>,
    addr: SocketAddr,
    connections: Arc<Connections>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut map) = self.connections.switches.lock()
            && map
                .get(&self.addr)
                .is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(&self.switch)))
        {
            map.remove(&self.addr);
        }
    }
}

impl Connections {
    /// Registers the connection from `addr`.
    pub fn register(self: &Arc<Self>, addr: SocketAddr) -> Registered {
        let switch = Arc::new(KillSwitch::default());
        if let Ok(mut map) = self.switches.lock() {
            map.insert(addr, Arc::downgrade(&switch));
        }
        Registered {
            switch,
            addr,
            connections: self.clone(),
        }
    }

    /// Ends the connection from `addr`; false when there is none.
    pub fn kill(&self, addr: SocketAddr) -> bool {
        let switch = self
            .switches
            .lock()
            .ok()
            .and_then(|map| map.get(&addr).and_then(Weak::upgrade));
        match switch {
            Some(s) => {
                s.kill();
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_connection_is_told_and_a_dropped_one_forgotten() {
        let connections = Arc::new(Connections::default());
        let addr: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let registered = connections.register(addr);
        let waker = futures::task::noop_waker();
        let cx = Context::from_waker(&waker);
        assert!(!registered.switch.killed(&cx));
        assert!(connections.kill(addr));
        assert!(registered.switch.killed(&cx));
        drop(registered);
        assert!(!connections.kill(addr));
        assert!(connections.switches.lock().unwrap().is_empty());
    }
}
