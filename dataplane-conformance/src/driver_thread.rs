//! A driver living on its own thread inside the node's network namespace:
//! kernel drivers act in the namespace of the thread that calls them.

use std::sync::mpsc;
use std::thread::JoinHandle;

use manul_dataplane_api::{Driver, FlowObservation, Operation};
use manul_netns::NetNs;

use crate::ConformanceError;

/// What a driver factory is told about the node it serves.
#[derive(Debug, Clone)]
pub struct NodeContext {
    /// The node's name (unique per run: use it for per-node state such as
    /// BPF pin paths).
    pub node: String,
}

/// Builds a driver on the node's thread. Called again for a restart.
pub type Factory = dyn Fn(&NodeContext) -> Result<Box<dyn Driver>, String> + Send + Sync;

enum Request {
    Apply(Vec<Operation>, mpsc::Sender<Result<(), String>>),
    /// Drop the driver (the process "dies") and build a new one.
    Restart(mpsc::Sender<Result<(), String>>),
    /// The driver's flow observations since the last call.
    TakeFlows(mpsc::Sender<Vec<FlowObservation>>),
}

/// The handle to the driver's thread. Dropping it stops the thread.
#[derive(Debug)]
pub struct DriverThread {
    tx: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Apply(ops, _) => write!(f, "Apply({} ops)", ops.len()),
            Request::Restart(_) => write!(f, "Restart"),
            Request::TakeFlows(_) => write!(f, "TakeFlows"),
        }
    }
}

pub use manul_model::error::chain;

impl DriverThread {
    /// Starts the thread in `node` and builds the driver there.
    pub fn start(
        node: &NetNs,
        context: NodeContext,
        factory: std::sync::Arc<Factory>,
    ) -> Result<DriverThread, ConformanceError> {
        let path = node.path().to_path_buf();
        let (tx, rx) = mpsc::channel::<Request>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let thread = std::thread::Builder::new()
            .name(format!("driver-{}", context.node))
            .spawn(move || {
                let entered = NetNs::from_path(&path).and_then(|ns| ns.enter_current_thread());
                if let Err(e) = entered {
                    let _ = ready_tx.send(Err(format!("cannot enter the node namespace: {e}")));
                    return;
                }
                let mut driver = match factory(&context) {
                    Ok(d) => d,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                while let Ok(request) = rx.recv() {
                    match request {
                        Request::Apply(ops, reply) => {
                            let _ = reply.send(driver.apply(&ops).map_err(|e| chain(&e)));
                        }
                        Request::TakeFlows(reply) => {
                            let _ = reply.send(driver.take_flows());
                        }
                        Request::Restart(reply) => {
                            drop(driver);
                            match factory(&context) {
                                Ok(d) => {
                                    driver = d;
                                    let _ = reply.send(Ok(()));
                                }
                                Err(e) => {
                                    let _ = reply.send(Err(e));
                                    return;
                                }
                            }
                        }
                    }
                }
            })
            .map_err(|e| ConformanceError::Setup(format!("cannot start the driver thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(DriverThread {
                tx: Some(tx),
                thread: Some(thread),
            }),
            Ok(Err(e)) => Err(ConformanceError::Driver(format!(
                "cannot create the driver: {e}"
            ))),
            Err(_) => Err(ConformanceError::Driver("the driver thread died".into())),
        }
    }

    fn call(
        &self,
        make: impl FnOnce(mpsc::Sender<Result<(), String>>) -> Request,
    ) -> Result<(), ConformanceError> {
        let (reply_tx, reply_rx) = mpsc::channel();
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| ConformanceError::Driver("the driver thread is stopped".into()))?;
        tx.send(make(reply_tx))
            .map_err(|_| ConformanceError::Driver("the driver thread died".into()))?;
        reply_rx
            .recv()
            .map_err(|_| ConformanceError::Driver("the driver thread died".into()))?
            .map_err(ConformanceError::Driver)
    }

    /// Applies a batch on the driver's thread.
    pub fn apply(&self, ops: Vec<Operation>) -> Result<(), ConformanceError> {
        if ops.is_empty() {
            return Ok(());
        }
        self.call(|reply| Request::Apply(ops, reply))
    }

    /// The driver's flow observations since the last call
    /// (`Driver::take_flows`).
    pub fn take_flows(&self) -> Result<Vec<FlowObservation>, ConformanceError> {
        let (reply_tx, reply_rx) = mpsc::channel();
        self.tx
            .as_ref()
            .ok_or_else(|| ConformanceError::Driver("the driver thread is stopped".into()))?
            .send(Request::TakeFlows(reply_tx))
            .map_err(|_| ConformanceError::Driver("the driver thread died".into()))?;
        reply_rx
            .recv()
            .map_err(|_| ConformanceError::Driver("the driver thread died".into()))
    }

    /// Drops the driver and builds a new one, as a restarting agent does.
    pub fn restart(&self) -> Result<(), ConformanceError> {
        self.call(Request::Restart)
    }
}

impl Drop for DriverThread {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
