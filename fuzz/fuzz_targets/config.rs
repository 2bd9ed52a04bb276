//! Arbitrary text as a configuration: every error located and rendered,
//! and a configuration that parses compiles its rules, limits and dynamic
//! blocks and evaluates them on a query, without a panic.
#![no_main]

use std::net::IpAddr;

use dnsha_core::config::Config;
use dnsha_core::dynblock::{evaluate, Event, EventKind};
use dnsha_core::ratelimit::RateLimiter;
use dnsha_core::rules::{Edns, Query, RuleSet};
use dnsha_core::Millis;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let config = match Config::parse(source) {
        Ok(c) => c,
        Err(errors) => {
            assert!(!errors.is_empty());
            for e in errors {
                let line = e.render("f.toml", source);
                assert!(line.starts_with("f.toml"));
            }
            return;
        }
    };
    let rules = RuleSet::new(config.rules.clone());
    let _ = rules.unreachable();
    let client: IpAddr = "10.1.2.3".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
    for qname in [&b"\x03www\x07example\x00"[..], b"\x00", b"\x01a\x01b\x01c\x00"] {
        let q = Query {
            qname,
            qtype: 1,
            client,
            listener: config.listeners.first().map_or("", |l| l.name.as_str()),
            edns: Some(Edns { dnssec_ok: true }),
            opcode: 0,
        };
        let d = rules.evaluate(&q, |_| {});
        assert_eq!(d.action.is_some(), d.rule.is_some());
    }
    for l in &config.limits {
        // Small tables only: the fuzzer may ask for ten million clients.
        let mut settings = l.settings;
        settings.max_clients = settings.max_clients.min(1024);
        let limiter = RateLimiter::new(settings);
        for i in 0..3u64 {
            let _ = limiter.allow(client, Millis(i));
        }
        assert!(limiter.clients() <= limiter.capacity());
    }
    if !config.dynamic_blocks.is_empty() {
        let events: Vec<Event> = (0..50u64)
            .map(|i| Event {
                at: Millis(1_000 + i * 10),
                client,
                kind: if i % 2 == 0 {
                    EventKind::Query { qtype: 255 }
                } else {
                    EventKind::Answer { rcode: 3, bytes: 100 }
                },
            })
            .collect();
        let _ = evaluate(&config.dynamic_blocks, &events, Millis(2_000), Millis(0));
    }
});
