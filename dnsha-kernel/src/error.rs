//! The error type of `dnsha-kernel`.

/// Errors of the kernel path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The process may not change nftables or conntrack.
    #[error(
        "kernel forwarding needs the CAP_NET_ADMIN capability (run as root, or grant it: \
         AmbientCapabilities=CAP_NET_ADMIN in the systemd unit): {context}"
    )]
    Permission {
        /// What was refused.
        context: &'static str,
        /// The kernel's answer.
        #[source]
        source: nlink::Error,
    },
    /// A netlink request failed.
    #[error("{context}: {source}")]
    Netlink {
        /// What was asked.
        context: &'static str,
        /// The kernel's answer.
        #[source]
        source: nlink::Error,
    },
    /// Another running dnsha keeps the table.
    #[error(
        "the nftables table inet dnsha is kept by another running dnsha (pid {pid}): one \
         dnsha with kernel listeners per network namespace"
    )]
    Busy {
        /// That process.
        pid: u32,
    },
    /// A plan names a backend its layout does not have (a bug: plans are
    /// made from their layout).
    #[error("the kernel plan of listener {listener} does not fit its layout")]
    Plan {
        /// The listener.
        listener: String,
    },
}

impl Error {
    /// Wraps a netlink error, naming the capability when it is missing.
    pub(crate) fn netlink(context: &'static str) -> impl FnOnce(nlink::Error) -> Self {
        move |source| {
            if source.is_permission_denied() {
                Self::Permission { context, source }
            } else {
                Self::Netlink { context, source }
            }
        }
    }
}

/// A `Result` of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
