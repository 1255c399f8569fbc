//! How Weir's processes meet the network.
//!
//! - TLS settings read from PEM files: what a listener presents ([`ServerTls`]) and which CA a
//!   client trusts ([`ClientTls`]); clients of a cluster trust its CA only, never the system's
//!   roots ([`tls`]);
//! - [`Listener`]: a bound TCP port that axum serves plain or over TLS, with handshakes off the
//!   accept loop so a slow or silent client holds up nobody ([`listener`]);
//! - [`Transport`]: how a process reaches the rest of its cluster (`http://` or `https://`, the
//!   HTTP client and the TLS connector that go with it);
//! - [`dev_certs`]: a CA and a certificate for a development or test cluster (`weir dev-certs`).
//!
//! Plain HTTP is served only on loopback unless the operator says otherwise
//! ([`Listener::bind`]). The roles, the shuffle service and the `weir` binary use this crate; it
//! uses no other crate of the workspace.

pub mod dev_certs;
pub mod listener;
pub mod tls;

pub use listener::{Connection, Listener, Plaintext, ReadHalf, WriteHalf};
pub use tls::{ClientTls, NetError, ServerTls, Transport};
