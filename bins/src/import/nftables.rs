//! nftables: DNAT rules of `nat` chains (`udp dport 53 dnat ip to numgen
//! inc mod 2 map { 0 : A, 1 : B }`) into a pool per port and listeners on
//! the matched addresses (any address when the rule matches none). The
//! rest of a ruleset (filter chains, SNAT, counters) has no equivalent in
//! a proxy and is reported.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::plan::{Backend, Listener, Origin, Plan, Policy, Pool, Proto};
use super::syntax::{lex, IncludeStack, Loader, Loc, Source, Tok, Warning, MAX_DEPTH, NFTABLES};
use super::values::{host_port, num, HostPort};
use crate::error::Result;

/// A token of a statement: a word, an inline `{ ... }`, a comma, or the
/// end of a statement (only inside `{ }`, where blocks hold statements).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Word(String, u32),
    Group(Vec<Self>, u32),
    Comma,
    Sep,
}

impl Item {
    fn word(&self) -> Option<&str> {
        match self {
            Self::Word(w, _) => Some(w),
            _ => None,
        }
    }
}

fn items(src: &Source) -> Result<Vec<Item>> {
    let mut stack: Vec<(Vec<Item>, u32)> = vec![(Vec::new(), 0)];
    for t in lex(src, NFTABLES)? {
        let item = match t.tok {
            Tok::Word(w) => Item::Word(w, t.line),
            Tok::Comma => Item::Comma,
            Tok::Semi | Tok::Newline => Item::Sep,
            Tok::Open => {
                if stack.len() > MAX_DEPTH {
                    return Err(src
                        .at(t.line)
                        .error(format!("braces nested deeper than {MAX_DEPTH}")));
                }
                stack.push((Vec::new(), t.line));
                continue;
            }
            Tok::Close => {
                if stack.len() < 2 {
                    return Err(src
                        .at(t.line)
                        .error("unbalanced braces: `}` closes no block"));
                }
                let Some((inner, line)) = stack.pop() else {
                    continue;
                };
                Item::Group(inner, line)
            }
        };
        if let Some(top) = stack.last_mut() {
            top.0.push(item);
        }
    }
    if stack.len() > 1 {
        let line = stack.last().map_or(1, |f| f.1);
        return Err(src
            .at(line)
            .error("unbalanced braces: this `{` is never closed"));
    }
    Ok(stack.pop().map(|f| f.0).unwrap_or_default())
}

/// The statements of a block: its items split at `;` and new lines.
fn statements(items: &[Item]) -> Vec<&[Item]> {
    items
        .split(|i| *i == Item::Sep)
        .filter(|s| !s.is_empty())
        .collect()
}

fn line_of(stmt: &[Item]) -> u32 {
    stmt.iter()
        .find_map(|i| match i {
            Item::Word(_, l) | Item::Group(_, l) => Some(*l),
            _ => None,
        })
        .unwrap_or(1)
}

fn words(stmt: &[Item]) -> String {
    stmt.iter()
        .map(|i| match i {
            Item::Word(w, _) => w.clone(),
            Item::Group(g, _) => format!("{{ {} }}", words(g)),
            Item::Comma => ",".into(),
            Item::Sep => ";".into(),
        })
        .collect::<Vec<_>>()
        .join(" ")
        .replace(" ,", ",")
}

/// A DNAT rule, read.
#[derive(Debug, Clone)]
struct Dnat {
    udp: bool,
    ports: Vec<u16>,
    daddr: Vec<IpAddr>,
    /// Backends as (address, explicit port), by slot.
    targets: Vec<(IpAddr, Option<u16>)>,
    random: bool,
    loc: Loc,
    chain: String,
}

/// Reads nftables ruleset `src` (includes read through `loader`).
pub(crate) fn import(src: &Source, loader: &mut dyn Loader, plan: &mut Plan) -> Result<()> {
    let mut rules = Vec::new();
    let mut warnings = Vec::new();
    read_file(
        src,
        loader,
        &IncludeStack::new(src),
        &mut rules,
        &mut warnings,
        plan,
    )?;
    plan.warnings.extend(warnings);
    services(rules, plan)
}

fn read_file(
    src: &Source,
    loader: &mut dyn Loader,
    stack: &IncludeStack,
    rules: &mut Vec<Dnat>,
    warnings: &mut Vec<Warning>,
    plan: &mut Plan,
) -> Result<()> {
    let all = items(src)?;
    let mut defines: BTreeMap<String, Vec<Item>> = BTreeMap::new();
    for st in statements(&all) {
        let loc = src.at(line_of(st));
        match st.first().and_then(Item::word) {
            Some("table") => table(src, st, &defines, rules, plan)?,
            Some("define") => match (
                st.get(1).and_then(Item::word),
                st.get(2).and_then(Item::word),
            ) {
                (Some(name), Some("=")) => {
                    defines.insert(format!("${name}"), st[3..].to_vec());
                }
                _ => return Err(loc.error("define: expected `define NAME = VALUE`")),
            },
            Some("include") => {
                let pattern = st
                    .get(1)
                    .and_then(Item::word)
                    .ok_or_else(|| loc.error("include: missing file name"))?;
                for inc in stack.resolve(loader, src, pattern, &loc, warnings)? {
                    read_file(&inc, loader, &stack.with(&inc), rules, warnings, plan)?;
                }
            }
            Some("flush") => {}
            _ => plan.warn(
                &loc,
                format!(
                    "{}: not read (write the ruleset as `table` blocks)",
                    words(st)
                ),
            ),
        }
    }
    Ok(())
}

fn table(
    src: &Source,
    st: &[Item],
    defines: &BTreeMap<String, Vec<Item>>,
    rules: &mut Vec<Dnat>,
    plan: &mut Plan,
) -> Result<()> {
    let loc = src.at(line_of(st));
    let Some(Item::Group(body, _)) = st.last() else {
        return Err(loc.error("table without a { } block"));
    };
    for inner in statements(body) {
        let iloc = src.at(line_of(inner));
        match inner.first().and_then(Item::word) {
            Some("chain") => {
                let name = inner.get(1).and_then(Item::word).unwrap_or("?").to_string();
                let Some(Item::Group(cbody, _)) = inner.last() else {
                    return Err(iloc.error(format!("chain {name} without a {{ }} block")));
                };
                chain(src, &name, cbody, defines, rules, plan)?;
            }
            Some("flags" | "comment") => {}
            _ => plan.warn(
                &iloc,
                format!(
                    "{}: no equivalent in dnsha; not imported",
                    words(&inner[..inner.len().min(2)])
                ),
            ),
        }
    }
    Ok(())
}

fn chain(
    src: &Source,
    name: &str,
    body: &[Item],
    defines: &BTreeMap<String, Vec<Item>>,
    rules: &mut Vec<Dnat>,
    plan: &mut Plan,
) -> Result<()> {
    let stmts = statements(body);
    let mut kind = None;
    let mut hook = None;
    for st in &stmts {
        if st.first().and_then(Item::word) == Some("type") {
            kind = st.get(1).and_then(Item::word);
            hook = st.get(3).and_then(Item::word);
        }
    }
    let chain_loc = src.at(stmts.first().map_or(1, |s| line_of(s)));
    match (kind, hook) {
        (Some("nat"), Some("prerouting" | "output")) => {}
        (Some("nat"), Some("postrouting")) => {
            for st in stmts.iter().filter(|s| !is_header(s)) {
                plan.warn(
                    &src.at(line_of(st)),
                    format!("chain {name}: {}: dnsha reaches the backends from its own address and gets their answers itself; not needed", words(st)),
                );
            }
            return Ok(());
        }
        _ => {
            plan.warn(
                &chain_loc,
                format!("chain {name} ({} {}): no equivalent in dnsha (listeners filter clients with `allow`); not imported", kind.unwrap_or("regular"), hook.unwrap_or("")),
            );
            return Ok(());
        }
    }
    for st in stmts.iter().filter(|s| !is_header(s)) {
        let expanded = expand(st, defines);
        let loc = src.at(line_of(st));
        match rule(&expanded, &loc, name, plan)? {
            Some(d) => rules.push(d),
            None => plan.warn(
                &loc,
                format!("chain {name}: {}: not a DNAT rule; not imported", words(st)),
            ),
        }
    }
    Ok(())
}

fn is_header(st: &[Item]) -> bool {
    matches!(
        st.first().and_then(Item::word),
        Some("type" | "policy" | "comment" | "devices")
    )
}

/// `$NAME` replaced by its `define`.
fn expand(st: &[Item], defines: &BTreeMap<String, Vec<Item>>) -> Vec<Item> {
    st.iter()
        .flat_map(|i| match i {
            Item::Word(w, _) if defines.contains_key(w) => {
                defines.get(w).cloned().unwrap_or_default()
            }
            Item::Group(g, l) => vec![Item::Group(expand(g, defines), *l)],
            other => vec![other.clone()],
        })
        .collect()
}

/// The words of a value: one word, or the members of `{ a, b }`.
fn values(item: Option<&Item>) -> Vec<String> {
    match item {
        Some(Item::Word(w, _)) => vec![w.clone()],
        Some(Item::Group(g, _)) => g
            .iter()
            .filter_map(Item::word)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

fn service_port(loc: &Loc, text: &str) -> Result<u16> {
    let p = match text {
        "domain" => 53,
        "domain-s" => 853,
        "https" => 443,
        "http" => 80,
        t => {
            if t.contains('-') {
                return Err(loc.error(format!(
                    "dport {t}: port ranges have no equivalent in dnsha"
                )));
            }
            num(loc, "dport", t)?
        }
    };
    Ok(p)
}

/// One rule of a nat chain: `None` when it has no `dnat`.
fn rule(st: &[Item], loc: &Loc, chain: &str, plan: &mut Plan) -> Result<Option<Dnat>> {
    let mut d = Dnat {
        udp: false,
        ports: Vec::new(),
        daddr: Vec::new(),
        targets: Vec::new(),
        random: false,
        loc: loc.clone(),
        chain: chain.to_string(),
    };
    let mut protos: Vec<String> = Vec::new();
    let mut dnat = false;
    let mut i = 0;
    let cannot = |what: &str| loc.error(format!("cannot read this rule at `{what}`"));
    while i < st.len() {
        let w = st[i].word().ok_or_else(|| cannot(&words(&st[i..=i])))?;
        match w {
            "iifname" | "iif" | "oifname" | "oif" => {
                plan.warn(
                    loc,
                    format!(
                        "{w} {}: dnsha listens on addresses, not interfaces; not imported",
                        values(st.get(i + 1)).join(", ")
                    ),
                );
                i += 2;
            }
            "ip" | "ip6" => match st.get(i + 1).and_then(Item::word) {
                Some("daddr") => {
                    for a in values(st.get(i + 2)) {
                        d.daddr.push(a.parse().map_err(|_| {
                            loc.error(format!(
                                "daddr {a}: dnsha listens on addresses, not networks"
                            ))
                        })?);
                    }
                    i += 3;
                }
                Some("saddr") => {
                    plan.warn(
                        loc,
                        format!(
                            "{w} saddr {}: not imported (listeners take an `allow` list)",
                            values(st.get(i + 2)).join(", ")
                        ),
                    );
                    i += 3;
                }
                _ => return Err(cannot(w)),
            },
            "meta" if st.get(i + 1).and_then(Item::word) == Some("l4proto") => {
                protos.extend(values(st.get(i + 2)));
                i += 3;
            }
            "udp" | "tcp" | "th" if st.get(i + 1).and_then(Item::word) == Some("dport") => {
                if w != "th" {
                    protos.push(w.to_string());
                }
                for p in values(st.get(i + 2)) {
                    d.ports.push(service_port(loc, &p)?);
                }
                i += 3;
            }
            "counter" | "accept" | "return" => i += 1,
            "log" => {
                plan.warn(
                    loc,
                    "log: dnsha writes an access log per listener (`access_log`); not imported",
                );
                i += 1;
            }
            "dnat" => {
                dnat = true;
                i = dnat_target(st, i + 1, &mut d, loc, plan)?;
            }
            other => return Err(cannot(other)),
        }
    }
    if !dnat {
        return Ok(None);
    }
    protos.sort();
    protos.dedup();
    d.udp = match protos.as_slice() {
        [p] if p == "udp" => true,
        [p] if p == "tcp" => false,
        _ => return Err(loc.error("dnat: the rule must match udp or tcp (one of them)")),
    };
    if d.ports.is_empty() {
        return Err(loc.error("dnat: the rule must match a destination port (dport)"));
    }
    Ok(Some(d))
}

/// `[ip|ip6] to TARGET` after `dnat`; the index after it.
fn dnat_target(
    st: &[Item],
    mut i: usize,
    d: &mut Dnat,
    loc: &Loc,
    plan: &mut Plan,
) -> Result<usize> {
    if matches!(st.get(i).and_then(Item::word), Some("ip" | "ip6")) {
        i += 1;
    }
    if st.get(i).and_then(Item::word) != Some("to") {
        return Err(loc.error("dnat: expected `to`"));
    }
    i += 1;
    match st.get(i).and_then(Item::word) {
        Some("numgen") => {
            let how = st.get(i + 1).and_then(Item::word);
            let (Some("mod"), Some(n), Some("map"), Some(Item::Group(map, _))) = (
                st.get(i + 2).and_then(Item::word),
                st.get(i + 3).and_then(Item::word),
                st.get(i + 4).and_then(Item::word),
                st.get(i + 5),
            ) else {
                return Err(loc.error(
                    "dnat to numgen: expected `numgen inc mod N map { 0 : ADDRESS, ... }`",
                ));
            };
            d.random = match how {
                Some("inc") => false,
                Some("random") => true,
                _ => return Err(loc.error("dnat to numgen: expected inc or random")),
            };
            let n: usize = num(loc, "numgen mod", n)?;
            d.targets = slots(map, n, loc, plan)?;
            Ok(i + 6)
        }
        Some(t) => {
            match host_port(loc, "dnat to", t)? {
                HostPort::Addr(a, p) => d.targets = vec![(a, p)],
                _ => return Err(loc.error(format!("dnat to {t}: expected an address"))),
            }
            Ok(i + 1)
        }
        None => Err(loc.error("dnat: expected a target after `to`")),
    }
}

/// The map `{ 0 : A, 1 : B }` as one target per slot, in slot order.
fn slots(map: &[Item], n: usize, loc: &Loc, plan: &mut Plan) -> Result<Vec<(IpAddr, Option<u16>)>> {
    let mut by_key = BTreeMap::new();
    for entry in map.split(|i| *i == Item::Comma || *i == Item::Sep) {
        if entry.is_empty() {
            continue;
        }
        let text: String = entry
            .iter()
            .filter_map(Item::word)
            .collect::<Vec<_>>()
            .join("");
        let (k, v) = text
            .split_once(':')
            .ok_or_else(|| loc.error(format!("map entry `{text}`: expected KEY : ADDRESS")))?;
        let k: usize = num(loc, "map key", k)?;
        let target = match host_port(loc, "map", v)? {
            HostPort::Addr(a, p) => (a, p),
            _ => return Err(loc.error(format!("map entry `{text}`: expected an address"))),
        };
        if k >= n {
            plan.warn(
                loc,
                format!("map key {k}: numgen mod {n} never yields it; not imported"),
            );
            continue;
        }
        by_key.insert(k, target);
    }
    if by_key.is_empty() {
        return Err(loc.error("dnat map: no entry"));
    }
    if by_key.len() < n {
        plan.warn(
            loc,
            format!("numgen mod {n} with {} map entries: nftables drops the packets of the other values; dnsha balances over the addresses mapped", by_key.len()),
        );
    }
    Ok(by_key.into_values().collect())
}

/// A service the rules describe: (udp, port, pool name).
type ServiceKey = (bool, u16, String);

/// The addresses a service is reached at (`None`: any) and its rules.
type ServiceRules = (Vec<Option<IpAddr>>, Vec<Dnat>);

/// Pools and listeners from the rules: one pool per port and backends,
/// one listener per protocol, port and address.
fn services(rules: Vec<Dnat>, plan: &mut Plan) -> Result<()> {
    // (udp, port, pool) → addresses (None: any) and the rules.
    let mut services: BTreeMap<ServiceKey, ServiceRules> = BTreeMap::new();
    let mut order = Vec::new();
    for d in rules {
        for &port in &d.ports {
            let mut counts: Vec<(SocketAddr, u32)> = Vec::new();
            for (a, p) in &d.targets {
                let addr = SocketAddr::new(*a, p.unwrap_or(port));
                match counts.iter_mut().find(|(x, _)| *x == addr) {
                    Some(c) => c.1 += 1,
                    None => counts.push((addr, 1)),
                }
            }
            let what = format!(
                "chain {} dnat {} dport {port}",
                d.chain,
                if d.udp { "udp" } else { "tcp" }
            );
            let mut pool = Pool::new(format!("nft-{port}"), Origin::new(&d.loc, what));
            pool.backends = counts
                .into_iter()
                .map(|(a, w)| Backend {
                    weight: w,
                    ..Backend::at(a)
                })
                .collect();
            pool.policy = Policy::round_robin(&pool.backends);
            if d.random {
                plan.warn(&d.loc, "numgen random: imported as round robin");
            }
            let name = plan.add_pool(pool);
            let key = (d.udp, port, name);
            if !services.contains_key(&key) {
                order.push(key.clone());
            }
            let entry = services.entry(key).or_default();
            if d.daddr.is_empty() {
                entry.0.push(None);
            }
            entry.0.extend(d.daddr.iter().copied().map(Some));
            entry.1.push(d.clone());
        }
    }
    for key in order {
        let Some((addrs, rules)) = services.remove(&key) else {
            continue;
        };
        let (udp, port, pool) = key;
        listeners(udp, port, &pool, addrs, &rules, plan);
    }
    Ok(())
}

fn listeners(
    udp: bool,
    port: u16,
    pool: &str,
    mut addrs: Vec<Option<IpAddr>>,
    rules: &[Dnat],
    plan: &mut Plan,
) {
    let Some(first) = rules.first() else { return };
    let v6 = rules
        .iter()
        .flat_map(|r| &r.targets)
        .all(|(a, _)| a.is_ipv6());
    if addrs.contains(&None) {
        addrs = vec![None];
    }
    addrs.dedup();
    let proto = Proto::l4(udp, port);
    for a in addrs {
        let ip = a.unwrap_or(if v6 {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        });
        let mut notes = super::lvs::listener_notes(proto);
        for r in &rules[1..] {
            notes.push(format!("also {} (chain {})", r.loc, r.chain));
        }
        if a.is_some() && proto != Proto::Passthrough {
            notes.push("forwarding = \"kernel\" would keep these packets in the kernel, as the DNAT rule did, steered by the health checks".into());
        }
        plan.add_listener(Listener {
            name: format!("{}-{port}", proto.as_str()),
            proto,
            listen: SocketAddr::new(ip, port),
            pool: pool.to_string(),
            keys: Vec::new(),
            origin: Origin::new(
                &first.loc,
                format!(
                    "chain {} dnat {} dport {port}",
                    first.chain,
                    if udp { "udp" } else { "tcp" }
                ),
            ),
            notes,
        });
    }
}

#[cfg(test)]
#[path = "nftables_tests.rs"]
mod tests;
