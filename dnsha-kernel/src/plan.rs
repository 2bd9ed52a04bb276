//! What the kernel should do, computed without touching it: the listeners
//! and their backends (the [`Layout`], which only a reload changes), and
//! for each listener the slots a packet counter picks from (the [`Plan`],
//! which health changes).
//!
//! A listener's slots list its healthy backends in proportion to their
//! weights, interleaved (smooth weighted round robin, as nginx orders its
//! `weight`ed servers), so `numgen inc mod <slots>` spreads even a short
//! burst of new flows by weight.

use std::net::SocketAddr;

/// At most this many slots per listener: weights are scaled down to fit,
/// each healthy backend keeping at least one slot.
pub const MAX_SLOTS: usize = 256;

/// The transport a kernel listener forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// UDP: each new flow (client address and port) is balanced.
    Udp,
    /// TCP: each new connection is balanced; conntrack keeps it on its
    /// backend.
    Tcp,
}

impl Proto {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Self::Udp => 17,
            Self::Tcp => 6,
        }
    }

    /// `udp` or `tcp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        }
    }
}

/// A listener the kernel serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    /// The listener's name in the configuration.
    pub name: String,
    /// What it forwards.
    pub proto: Proto,
    /// The address and port clients send to (a specific address: a VIP or
    /// an address of the host).
    pub addr: SocketAddr,
    /// The pool whose backends it forwards to.
    pub pool: String,
}

/// A backend of a kernel listener's pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    /// Its name in the pool.
    pub name: String,
    /// Where its packets go.
    pub addr: SocketAddr,
    /// Its share of new flows (0: none).
    pub weight: u32,
}

/// The listeners and, for each, its pool's backends: the shape of the
/// table, which only a reload changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    /// Each listener with its backends, in configuration order.
    pub listeners: Vec<(ListenerSpec, Vec<BackendSpec>)>,
}

impl Layout {
    /// The plan with the backends `up` says are healthy: `up(listener,
    /// backend)` for each backend of each listener.
    pub fn plan(&self, mut up: impl FnMut(&ListenerSpec, &BackendSpec) -> bool) -> Plan {
        let slots = self
            .listeners
            .iter()
            .map(|(l, backends)| {
                let weights: Vec<u32> = backends
                    .iter()
                    .map(|b| {
                        let same_family = b.addr.is_ipv4() == l.addr.is_ipv4();
                        if same_family && up(l, b) {
                            b.weight
                        } else {
                            0
                        }
                    })
                    .collect();
                slots(&weights)
            })
            .collect();
        Plan { slots }
    }
}

/// For each listener of a [`Layout`], the backend (its index in the
/// listener's list) each slot sends to; no slots when no backend is
/// healthy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    slots: Vec<Vec<usize>>,
}

impl Plan {
    /// The slots of listener `i` (empty when it has none or no such
    /// listener).
    pub fn slots(&self, i: usize) -> &[usize] {
        self.slots.get(i).map_or(&[], Vec::as_slice)
    }

    /// Whether listener `i` has a healthy backend: otherwise its packets
    /// are left to the userspace listener on the same address.
    pub fn serves(&self, i: usize) -> bool {
        !self.slots(i).is_empty()
    }

    /// Whether backend `b` of listener `i` gets new flows.
    pub fn uses(&self, i: usize, b: usize) -> bool {
        self.slots(i).contains(&b)
    }

    /// The (listener, backend) pairs this plan sends to and `next` does
    /// not: their flows must leave conntrack, or a client reusing its
    /// source port keeps reaching a backend that is gone.
    pub fn dropped_in(&self, next: &Self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (i, slots) in self.slots.iter().enumerate() {
            let mut seen: Vec<usize> = slots.clone();
            seen.sort_unstable();
            seen.dedup();
            out.extend(
                seen.into_iter()
                    .filter(|b| !next.uses(i, *b))
                    .map(|b| (i, b)),
            );
        }
        out
    }

    /// The listeners that serve in `next` and did not here: flows they
    /// left with the userspace listener should be balanced again.
    pub fn resumed_in(&self, next: &Self) -> Vec<usize> {
        (0..next.slots.len())
            .filter(|&i| next.serves(i) && !self.serves(i))
            .collect()
    }
}

/// Slots for backends of `weights` (0: not used), in proportion and
/// interleaved. Weights are divided by their greatest common divisor, then
/// scaled down when they sum past [`MAX_SLOTS`].
///
/// ```
/// use dnsha_kernel::plan::slots;
/// assert_eq!(slots(&[3, 1]), vec![0, 0, 1, 0]);
/// assert_eq!(slots(&[100, 0, 100]), vec![0, 2]);
/// assert!(slots(&[0, 0]).is_empty());
/// ```
pub fn slots(weights: &[u32]) -> Vec<usize> {
    let g = weights.iter().copied().filter(|w| *w > 0).fold(0, gcd);
    if g == 0 {
        return Vec::new();
    }
    let mut shares: Vec<u64> = weights.iter().map(|w| u64::from(w / g)).collect();
    let total: u64 = shares.iter().sum();
    let max = MAX_SLOTS as u64;
    if total > max {
        for s in shares.iter_mut().filter(|s| **s > 0) {
            *s = (*s * max / total).max(1);
        }
        // Rounding up to one slot each may overshoot: take the excess from
        // the largest shares.
        while shares.iter().sum::<u64>() > max {
            if let Some(top) = shares.iter_mut().max() {
                *top -= 1;
            }
        }
    }
    let total: u64 = shares.iter().sum();
    let total_i = i64::try_from(total).unwrap_or(i64::MAX);
    // Smooth weighted round robin: each round every backend gains its
    // share, the one furthest ahead is picked and pays the total.
    let mut current = vec![0i64; shares.len()];
    let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best: Option<usize> = None;
        for (i, s) in shares.iter().enumerate() {
            if *s == 0 {
                continue;
            }
            current[i] += i64::try_from(*s).unwrap_or(i64::MAX);
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        if let Some(b) = best {
            current[b] -= total_i;
            out.push(b);
        }
    }
    out
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(port: u16) -> ListenerSpec {
        ListenerSpec {
            name: format!("l{port}"),
            proto: Proto::Udp,
            addr: SocketAddr::from(([192, 168, 1, 5], port)),
            pool: "p".into(),
        }
    }

    fn backend(n: u8, weight: u32) -> BackendSpec {
        BackendSpec {
            name: format!("b{n}"),
            addr: SocketAddr::from(([10, 0, 0, n], 53)),
            weight,
        }
    }

    #[test]
    fn slots_follow_weights_and_interleave() {
        assert_eq!(slots(&[1, 1]), vec![0, 1]);
        assert_eq!(slots(&[2, 2, 2]), vec![0, 1, 2]);
        let s = slots(&[5, 1, 1]);
        assert_eq!(s, vec![0, 0, 1, 0, 2, 0, 0]);
        let s = slots(&[300, 100]);
        assert_eq!(s.iter().filter(|b| **b == 0).count(), 3);
        assert_eq!(s.len(), 4);
    }

    #[test]
    fn large_weights_are_scaled_to_the_cap_and_keep_every_backend() {
        let s = slots(&[1000, 999, 1]);
        assert!(s.len() <= MAX_SLOTS, "{}", s.len());
        for b in 0..3 {
            assert!(s.contains(&b), "backend {b} lost its slot");
        }
        let zero = s.iter().filter(|b| **b == 0).count();
        let one = s.iter().filter(|b| **b == 1).count();
        assert!(zero.abs_diff(one) <= 2, "{zero} vs {one}");
        let many: Vec<u32> = (1..=400).collect();
        let s = slots(&many);
        assert_eq!(s.len(), MAX_SLOTS);
    }

    #[test]
    fn a_plan_keeps_only_healthy_backends_of_the_listeners_family() {
        let mut v6 = backend(9, 1);
        v6.addr = "[2001:db8::9]:53".parse().unwrap_or(v6.addr);
        let layout = Layout {
            listeners: vec![(listener(53), vec![backend(1, 2), backend(2, 1), v6])],
        };
        let all = layout.plan(|_, _| true);
        assert_eq!(all.slots(0), &[0, 1, 0]);
        let one_down = layout.plan(|_, b| b.name != "b1");
        assert_eq!(one_down.slots(0), &[1]);
        let none = layout.plan(|_, _| false);
        assert!(!none.serves(0));
        assert!(all.serves(0));
        assert!(!all.serves(7));
    }

    #[test]
    fn flows_of_a_backend_that_left_the_slots_are_dropped_and_a_listener_that_resumes_is_named() {
        let layout = Layout {
            listeners: vec![
                (listener(53), vec![backend(1, 1), backend(2, 1)]),
                (listener(54), vec![backend(3, 1)]),
            ],
        };
        let all = layout.plan(|_, _| true);
        let without = layout.plan(|_, b| b.name != "b2" && b.name != "b3");
        assert_eq!(all.dropped_in(&without), vec![(0, 1), (1, 0)]);
        assert!(without.dropped_in(&all).is_empty());
        assert_eq!(without.resumed_in(&all), vec![1]);
        assert!(all.resumed_in(&without).is_empty());
        assert!(all.dropped_in(&all).is_empty());
    }
}
