//! Manul's resource model.
//!
//! Typed Calico `projectcalico.org/v3` resources, the Kubernetes kinds Manul
//! consumes, the Calico selector language, validation with precise error
//! locations, the conversion of Kubernetes NetworkPolicies, Namespaces,
//! ServiceAccounts, Pods and Nodes into their v3 form, and resource keys.
//!
//! It refuses to do I/O beyond decoding bytes it is handed: no files, no
//! sockets, no clocks. Callers read files; this crate parses and judges them.

pub mod convert;
pub mod crd;
pub mod defaults;
pub mod error;
pub mod load;
mod load_typed;
pub mod names;
pub mod not_acted;
pub mod operator;
pub mod promote;
pub mod resource;
pub mod selector;
pub mod stored;
pub mod v3;
pub mod validate;
mod value_de;

pub use error::{FieldError, LoadError, LoadWarning, Problem};
pub use load::{LoadOutcome, Loaded, load};
pub use resource::{Kind, Resource, ResourceKey};
pub use selector::Selector;
