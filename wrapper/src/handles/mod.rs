//! Native handles (checklist: "Who owns each native pointer?", "Can the call block?", "Pythonic
//! API", "What happens during shutdown?"). A `Connection` owns exactly one `native_db*`; the
//! pointer never leaves this module. `close` is idempotent and dealloc closes ("Ownership at the
//! Boundary", "Wrapping Native Handles", "Context Managers for Native Resources"). libnative
//! forbids closing while another call on the same handle runs, so calls pin the handle and close
//! waits for the pins to drain with the GIL released (a blocked closer holding the GIL would
//! deadlock a callback).

mod connection;
mod convert;
mod iter;
mod state;

pub(crate) use connection::connect;
pub use connection::Connection;
pub use iter::ItemsIter;
pub(crate) use state::{shutdown_all, ConnInner, Pin, CALLBACK_DEPTH, SHUTTING_DOWN};
