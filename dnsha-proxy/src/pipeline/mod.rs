//! The per-query core of the balancer, sans-IO: no sockets and no clock of
//! its own (the drivers pass `now`), as quinn-proto is for QUIC and the VRRP
//! `Router` is here.
//!
//! Every frontend feeds its queries through the same steps:
//!
//! 1. [`admit`]: the listener's ACL and the DNS validation of
//!    [`crate::wire::dns`] decide whether a client message is forwarded,
//!    answered at once (FORMERR, NOTIMP, REFUSED) or dropped, and count it.
//!    Then the configuration's rules ([`Rules`]) say which pool the query
//!    goes to, or answer it at once (REFUSED, NXDOMAIN, TC=1, a fixed
//!    answer) or drop it.
//! 2. [`cache`]: the pool's packet cache answers what it holds fresh; a
//!    miss carries the query's key on, so the answer is stored.
//! 3. [`Flight`]: one query's life. [`Flight::start`] picks the first
//!    backend; fed an answer ([`Flight::answered`]) it records passive
//!    health, restores the client's ID and finishes; fed a failure
//!    ([`Flight::failed`]: timeout, refusal, closed connection) it records
//!    it and says the next step, another backend or the pool's
//!    `on_no_backend` (SERVFAIL or drop). Each ending writes the one
//!    access-log record of the query. When the pool cannot answer, the
//!    cache's stale answer (serve-stale) comes before `on_no_backend`.
//! 4. [`Attempts`]: the pick-retry-record loop on its own, for the TCP
//!    passthrough whose unit is a connection rather than a query.
//!
//! The drivers are the frontends: the UDP worker keeps its flights in a
//! pending table keyed by upstream socket and ID, the stream frontends
//! (TCP, DoT, DoH, UDP to stream backends) run one future per query that
//! asks [`crate::upstream`] for each attempt.

mod admit;
mod attempts;
pub mod cache;
mod dynblock;
mod flight;
mod health;
mod limits;
mod rules;
#[cfg(test)]
mod rules_tests;
mod shared;
#[cfg(test)]
mod tests;

pub use admit::{admit, Admission, Admitted};
pub use attempts::{Attempt, Attempts};
pub use dynblock::{DynBlocks, Tick, MAX_EVENTS};
pub use flight::{Failure, Flight, Next};
pub use health::{record_answer, record_connected, record_failure};
pub use limits::{Limit, Limits};
pub use rules::{Rules, Ruling};
pub use shared::{ListenerShared, Target};
