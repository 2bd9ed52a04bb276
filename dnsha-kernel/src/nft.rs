//! The nftables table a [`Layout`] and a [`Plan`] describe, as netlink
//! batches (built here, committed by [`crate::KernelPath`]):
//!
//! ```text
//! table inet dnsha {
//!   counter l0b0q {}  counter l0b0a {}  ...       # per listener and backend
//!   map l0 { typeof numgen inc mod 3 : ip daddr . udp dport;
//!            elements = { 0 : 10.0.0.1 . 53, 1 : 10.0.0.2 . 53, 2 : ... } }
//!   chain prerouting  { type nat hook prerouting priority dstnat;
//!     ip daddr 192.168.1.5 udp dport 53 dnat ip to numgen inc mod 3 map @l0 }
//!   chain output      { type nat hook output priority -100;  # the host's own queries
//!     ip daddr 192.168.1.5 udp dport 53 dnat ip to numgen inc mod 3 map @l0 }
//!   chain postrouting { type nat hook postrouting priority srcnat;
//!     ct status dnat ct original ip daddr 192.168.1.5 meta l4proto udp
//!       ct original proto-dst 53 oifname != "lo" masquerade }
//!   chain queries     { type filter hook postrouting priority 0;
//!     ct direction original ct status dnat jump count_queries }
//!   chain count_queries {
//!     ct reply ip saddr 10.0.0.1 ct reply proto-src 53
//!       ct original ip daddr 192.168.1.5 meta l4proto udp ct original proto-dst 53
//!       counter name l0b0q accept }
//!   chain answers     { type filter hook prerouting priority 0;
//!     ct direction reply ct status dnat jump count_answers }
//!   chain count_answers { ... counter name l0b0a accept }
//! }
//! ```
//!
//! Queries are counted as they leave for a backend (postrouting sees both
//! forwarded and the host's own), answers as they arrive from it
//! (prerouting sees every one).

use std::net::{IpAddr, SocketAddr};

use nlink::netlink::nftables::{
    BaseChain, Chain, ChainName, CtDirection, CtStatus, Expr, Family, FilterHook, LookupExpr,
    NatHook, NumgenKind, Object, Policy, Priority, RawExpr, Register, Rule, Set, SetDataType,
    SetElement, SetKeyType, Transaction,
};

use crate::plan::{BackendSpec, Layout, ListenerSpec, Plan};
use crate::{Error, Result};

/// The table's name, in family `inet`.
pub const TABLE: &str = "dnsha";

/// Chains holding the DNAT rules, which health changes rewrite.
const NAT_CHAINS: [&str; 2] = ["prerouting", "output"];

/// The map of listener `i`.
pub fn map_name(i: usize) -> String {
    format!("l{i}")
}

/// The counter of listener `i`, backend `b`: queries (`q`) or answers
/// (`a`).
pub fn counter_name(i: usize, b: usize, answers: bool) -> String {
    format!("l{i}b{b}{}", if answers { 'a' } else { 'q' })
}

/// The whole table for `layout`, routing as `plan` says, replacing the
/// table of the same name when one `exists` (a crash leaves one behind, a
/// reload replaces its own) in the same transaction.
pub fn install(
    tx: Transaction,
    layout: &Layout,
    plan: &Plan,
    exists: bool,
    owner: u32,
) -> Result<Transaction> {
    let mut tx = tx;
    if exists {
        tx = tx.del_table(TABLE, Family::Inet);
    }
    tx = tx.add_table_with_comment(TABLE, Family::Inet, 0, Some(&owner_comment(owner)));
    tx = tx
        .add_chain(nat_chain(
            "prerouting",
            NatHook::Prerouting,
            Priority::DstNat,
        )?)
        .add_chain(nat_chain(
            "output",
            NatHook::Output,
            Priority::Custom(-100),
        )?)
        .add_chain(nat_chain(
            "postrouting",
            NatHook::Postrouting,
            Priority::SrcNat,
        )?)
        .add_chain(filter_chain("queries", FilterHook::Postrouting)?)
        .add_chain(filter_chain("answers", FilterHook::Prerouting)?)
        .add_chain(regular_chain("count_queries")?)
        .add_chain(regular_chain("count_answers")?);
    // Each packet crossing the host passes the two counting hooks: one
    // cheap test sends only the kernel path's own flows, in the counted
    // direction, on to the per-backend rules.
    for (chain, counts, direction) in [
        ("queries", "count_queries", CtDirection::Original),
        ("answers", "count_answers", CtDirection::Reply),
    ] {
        tx = tx.add_rule(
            Rule::new(TABLE, chain)
                .family(Family::Inet)
                .match_ct_direction(direction)
                .match_ct_status(CtStatus::DST_NAT)
                .jump(ChainName::new(counts).map_err(Error::netlink("naming a chain"))?),
        );
    }
    for (i, (l, backends)) in layout.listeners.iter().enumerate() {
        // Not on `lo`: a backend on the host answers the host anyway, and
        // loopback has no address masquerade could take (the packet would
        // be dropped).
        tx = tx.add_rule(
            flow_of(Rule::new(TABLE, "postrouting"), l)
                .match_oif_not("lo")
                .masquerade()
                .comment(&l.name),
        );
        for (b, backend) in backends.iter().enumerate() {
            if backend.addr.is_ipv4() != l.addr.is_ipv4() {
                continue;
            }
            for answers in [false, true] {
                let name = counter_name(i, b, answers);
                tx = tx.add_object(&Object::counter(TABLE, &name));
                let chain = if answers {
                    "count_answers"
                } else {
                    "count_queries"
                };
                // The backend first (it tells flows apart soonest), then
                // the listener; the first match ends the walk.
                let rule = counted_flow(Rule::new(TABLE, chain), l, backend)
                    .counter_named(&name)
                    .accept()
                    .comment(&format!("{} {}", l.name, backend.name));
                tx = tx.add_rule(rule);
            }
        }
    }
    routes(tx, layout, plan, false)
}

/// The DNAT rules and maps for `plan`, replacing the ones there, in one
/// transaction: a packet sees the old routing or the new, never none.
pub fn update(mut tx: Transaction, layout: &Layout, plan: &Plan) -> Result<Transaction> {
    for chain in NAT_CHAINS {
        tx = tx.flush_chain(TABLE, chain, Family::Inet);
    }
    routes(tx, layout, plan, true)
}

/// The table's comment: the process that keeps it (`nft list tables`
/// shows it; a second dnsha refuses to take a table a live one keeps).
pub fn owner_comment(pid: u32) -> String {
    format!("dnsha pid {pid}")
}

/// The process a table's comment names.
pub fn owner_of(comment: &str) -> Option<u32> {
    comment.strip_prefix("dnsha pid ")?.parse().ok()
}

/// The table's removal.
pub fn remove(tx: Transaction) -> Transaction {
    tx.del_table(TABLE, Family::Inet)
}

fn routes(mut tx: Transaction, layout: &Layout, plan: &Plan, replace: bool) -> Result<Transaction> {
    for (i, (l, backends)) in layout.listeners.iter().enumerate() {
        let name = map_name(i);
        let map = map_of(&name, l);
        if replace {
            // The install made every listener's map: an update replaces it.
            tx = tx.del_set(TABLE, &name, Family::Inet);
        }
        tx = tx.add_set(map.clone());
        let slots = plan.slots(i);
        if slots.is_empty() {
            continue;
        }
        let elements = slots
            .iter()
            .enumerate()
            .map(|(slot, b)| {
                let backend = backends.get(*b).ok_or(Error::Plan {
                    listener: l.name.clone(),
                })?;
                let slot = u32::try_from(slot).map_err(|_| Error::Plan {
                    listener: l.name.clone(),
                })?;
                Ok(SetElement::new(slot.to_ne_bytes().to_vec()).value(destination(backend.addr)))
            })
            .collect::<Result<Vec<_>>>()?;
        tx = tx.add_set_elements(&map, &elements);
        let modulus = u32::try_from(slots.len()).map_err(|_| Error::Plan {
            listener: l.name.clone(),
        })?;
        for chain in NAT_CHAINS {
            tx = tx.add_rule(dnat(Rule::new(TABLE, chain), l, &name, modulus));
        }
    }
    Ok(tx)
}

fn nat_chain(name: &str, hook: NatHook, priority: Priority) -> Result<Chain> {
    Ok(Chain::new(TABLE, name)
        .map_err(Error::netlink("naming a chain"))?
        .family(Family::Inet)
        .base(BaseChain::nat(hook, priority).policy(Policy::Accept)))
}

fn filter_chain(name: &str, hook: FilterHook) -> Result<Chain> {
    Ok(Chain::new(TABLE, name)
        .map_err(Error::netlink("naming a chain"))?
        .family(Family::Inet)
        .base(BaseChain::filter(hook, Priority::Filter).policy(Policy::Accept)))
}

/// The map of a listener: slot number (host order, as `numgen` writes it)
/// to backend address and port.
fn map_of(name: &str, l: &ListenerSpec) -> Set {
    let addr = if l.addr.is_ipv4() {
        SetKeyType::Ipv4Addr
    } else {
        SetKeyType::Ipv6Addr
    };
    Set::new(TABLE, name)
        .family(Family::Inet)
        .key_type(SetKeyType::Mark)
        .map(SetDataType::Value(SetKeyType::Concat(vec![
            addr,
            SetKeyType::InetService,
        ])))
}

/// A backend's address and port as a map value (`10.0.0.1 . 53`).
fn destination(addr: SocketAddr) -> SetElement {
    let ip = match addr.ip() {
        IpAddr::V4(a) => SetElement::ipv4(a),
        IpAddr::V6(a) => SetElement::ipv6(a),
    };
    SetElement::concat([ip, SetElement::port(addr.port())])
}

/// `ip daddr L <proto> dport P dnat ip to numgen inc mod N map @m`.
fn dnat(rule: Rule, l: &ListenerSpec, map: &str, modulus: u32) -> Rule {
    let (family, port_reg) = if l.addr.is_ipv4() {
        (NFPROTO_IPV4, Register::Reg32_01)
    } else {
        (NFPROTO_IPV6, Register::Reg32_04)
    };
    let rule = rule
        .family(Family::Inet)
        .match_daddr(l.addr.ip(), if l.addr.is_ipv4() { 32 } else { 128 })
        .match_l4proto(l.proto.number());
    let rule = match l.proto {
        crate::plan::Proto::Udp => rule.match_udp_dport(l.addr.port()),
        crate::plan::Proto::Tcp => rule.match_tcp_dport(l.addr.port()),
    };
    rule.expr(Expr::Numgen {
        dreg: Register::R0,
        kind: NumgenKind::Incremental,
        modulus,
        offset: 0,
    })
    .expr(Expr::Lookup(
        LookupExpr::new(map, Register::R0).dreg(Register::R0),
    ))
    .expr(Expr::Raw(RawExpr::new(
        "nat",
        dnat_from_registers(family, port_reg),
    )))
    .comment(&l.name)
}

/// Flows the kernel sent on for listener `l`: `ct status dnat ct original
/// daddr L meta l4proto P ct original proto-dst PORT`.
fn flow_of(rule: Rule, l: &ListenerSpec) -> Rule {
    rule.family(Family::Inet)
        .match_ct_status(CtStatus::DST_NAT)
        .match_ct_addr(CtDirection::Original, false, l.addr.ip())
        .match_l4proto(l.proto.number())
        .match_ct_port(CtDirection::Original, false, l.addr.port())
}

/// A flow of listener `l` sent to backend `b` (the counting chains are
/// reached only by DNATed flows): `ct reply saddr B ct reply proto-src
/// BPORT ct original daddr L meta l4proto P ct original proto-dst PORT`.
fn counted_flow(rule: Rule, l: &ListenerSpec, b: &BackendSpec) -> Rule {
    rule.family(Family::Inet)
        .match_ct_addr(CtDirection::Reply, true, b.addr.ip())
        .match_ct_port(CtDirection::Reply, true, b.addr.port())
        .match_ct_addr(CtDirection::Original, false, l.addr.ip())
        .match_l4proto(l.proto.number())
        .match_ct_port(CtDirection::Original, false, l.addr.port())
}

fn regular_chain(name: &str) -> Result<Chain> {
    Ok(Chain::new(TABLE, name)
        .map_err(Error::netlink("naming a chain"))?
        .family(Family::Inet))
}

// `enum nft_nat_attributes` and friends, from the kernel's
// <linux/netfilter/nf_tables.h> and <linux/netfilter/nf_nat.h>. nlink
// builds `dnat` only from addresses it loads itself, so the statement that
// takes its address and port from a map lookup's registers is written as
// nlink's raw expression: seven attributes of one u32 each.
const NFTA_NAT_TYPE: u16 = 1;
const NFTA_NAT_FAMILY: u16 = 2;
const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
const NFTA_NAT_REG_ADDR_MAX: u16 = 4;
const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
const NFTA_NAT_REG_PROTO_MAX: u16 = 6;
const NFTA_NAT_FLAGS: u16 = 7;
const NFT_NAT_DNAT: u32 = 1;
const NFPROTO_IPV4: u32 = 2;
const NFPROTO_IPV6: u32 = 10;
/// `NF_NAT_RANGE_MAP_IPS | NF_NAT_RANGE_PROTO_SPECIFIED`.
const NAT_FLAGS: u32 = 1 | 2;

/// The attributes of `nat dnat <family> addr_min reg 1 proto_min reg P`,
/// as `nft` writes `dnat ip to numgen inc mod N map @m`: the address in the
/// first register, the port in `port_reg`.
fn dnat_from_registers(family: u32, port_reg: Register) -> Vec<u8> {
    let addr = Register::R0.wire();
    let port = port_reg.wire();
    let mut out = Vec::with_capacity(7 * 8);
    for (kind, value) in [
        (NFTA_NAT_TYPE, NFT_NAT_DNAT),
        (NFTA_NAT_FAMILY, family),
        (NFTA_NAT_REG_ADDR_MIN, addr),
        (NFTA_NAT_REG_ADDR_MAX, addr),
        (NFTA_NAT_REG_PROTO_MIN, port),
        (NFTA_NAT_REG_PROTO_MAX, port),
        (NFTA_NAT_FLAGS, NAT_FLAGS),
    ] {
        // struct nlattr: length (header and value) and type in host
        // order, then the value in network order: 8 bytes, aligned.
        out.extend_from_slice(&8u16.to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&value.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dnat_statement_names_the_lookup_registers() {
        let v4 = dnat_from_registers(NFPROTO_IPV4, Register::Reg32_01);
        assert_eq!(v4.len(), 56);
        // NFTA_NAT_REG_ADDR_MIN: NFT_REG_1, as nft writes it.
        let mut addr_min = Vec::new();
        addr_min.extend_from_slice(&8u16.to_ne_bytes());
        addr_min.extend_from_slice(&3u16.to_ne_bytes());
        addr_min.extend_from_slice(&1u32.to_be_bytes());
        assert_eq!(&v4[16..24], &addr_min[..]);
        // NFTA_NAT_REG_PROTO_MIN: NFT_REG32_01 (9) for IPv4, ...
        assert_eq!(&v4[36..40], &9u32.to_be_bytes());
        // ... the word after a 16-byte IPv6 address, NFT_REG32_04, which
        // is NFT_REG_2 and written so.
        let v6 = dnat_from_registers(NFPROTO_IPV6, Register::Reg32_04);
        assert_eq!(&v6[12..16], &10u32.to_be_bytes());
        assert_eq!(&v6[36..40], &2u32.to_be_bytes());
    }

    #[test]
    fn the_owner_is_read_back_from_the_comment() {
        assert_eq!(owner_of(&owner_comment(4242)), Some(4242));
        assert_eq!(owner_of("made by hand"), None);
        assert_eq!(owner_of("dnsha pid x"), None);
    }

    #[test]
    fn maps_and_counters_are_named_by_position() {
        let names = (
            map_name(3),
            counter_name(1, 2, false),
            counter_name(1, 2, true),
        );
        assert_eq!(names, ("l3".into(), "l1b2q".into(), "l1b2a".into()));
    }
}
