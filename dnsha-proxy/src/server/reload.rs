//! Reload: diff the new configuration against the running one, start what
//! is new, then commit in one step (or change nothing).

use std::sync::Arc;

use dnsha_core::config::{Config, ListenerConfig, PoolConfig, Protocol};
use dnsha_core::Pool;
use dnsha_health::HealthMonitor;
use rustls::sign::CertifiedKey;
use serde::Serialize;

use super::bind::workers_for;
use super::{new_pool, RunningListener, Server, State};
use crate::error::{Error, Result};
use crate::pipeline::ListenerShared;
use crate::tls::ServerTls;

/// What a reload changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReloadSummary {
    /// Pools created.
    pub pools_added: usize,
    /// Pools whose policy changed.
    pub pools_changed: usize,
    /// Pools removed.
    pub pools_removed: usize,
    /// Listeners started.
    pub listeners_added: usize,
    /// Listeners stopped.
    pub listeners_removed: usize,
}

/// Whether a running listener can take `new` by swapping settings, without
/// rebinding its sockets (a reload binds new sockets for any other).
pub fn same_sockets(old: &ListenerConfig, new: &ListenerConfig) -> bool {
    old.name == new.name
        && old.protocol == new.protocol
        && old.listen == new.listen
        && old.tls.is_some() == new.tls.is_some()
        && (old.protocol != Protocol::Udp
            || (workers_for(old) == workers_for(new)
                && old.pin_workers == new.pin_workers
                && old.adaptive_workers == new.adaptive_workers))
}

/// Listeners started for a reload that is not committed yet: dropped
/// without [`Self::commit`], they are stopped (the rollback, in one place).
#[derive(Default)]
pub(super) struct Started(Vec<RunningListener>);

impl Started {
    pub(super) fn push(&mut self, r: RunningListener) {
        self.0.push(r);
    }

    /// The listeners, now part of the running set.
    pub(super) fn commit(mut self) -> Vec<RunningListener> {
        std::mem::take(&mut self.0)
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        for r in &self.0 {
            r.ctx.stop.cancel();
        }
    }
}

/// The work of a reload, prepared before anything changes.
struct Plan {
    /// Running listeners kept (by index), with their new settings.
    keep: Vec<(usize, ListenerShared)>,
    /// New certificates of kept DoT/DoH listeners.
    keys: Vec<(Arc<ServerTls>, Arc<CertifiedKey>)>,
    started: Started,
    /// The pools' caches, kept ones included.
    caches: Vec<(String, Arc<crate::cache::PacketCache>)>,
    /// The new rules, swapped in with the listeners' settings.
    rules: Arc<crate::pipeline::Rules>,
    /// The new limits.
    limits: Arc<crate::pipeline::Limits>,
    /// The new dynamic blocks.
    dynblocks: Option<Arc<crate::pipeline::DynBlocks>>,
}

impl Server {
    /// Applies a new configuration: pools are updated in place (backends that
    /// stay keep their state and counters; queries in flight are untouched),
    /// listeners whose sockets are unchanged get the new settings, others are
    /// started or stopped (stopped ones finish their queries in flight). On
    /// error nothing changes.
    pub fn reload(&self, config: &Config) -> Result<ReloadSummary> {
        HealthMonitor::validate(config).map_err(|source| Error::Health { source })?;
        let mut st = self.lock();
        let mut summary = ReloadSummary::default();
        let (pools, in_place) = update_pools(&st, config, &mut summary);
        let plan = self.plan(&st, config, &pools)?;
        // Commit.
        for (pool, pc) in in_place {
            pool.update(pc.settings.clone(), members(pc));
        }
        for (tls, key) in plan.keys {
            tls.install(key);
        }
        let mut old = std::mem::take(&mut st.listeners);
        let mut next = Vec::new();
        let kept: Vec<usize> = plan.keep.iter().map(|(i, _)| *i).collect();
        for (i, shared) in plan.keep {
            if let Some(r) = old.get_mut(i) {
                r.config = shared.config.clone();
                r.ctx.shared.store(Arc::new(shared));
            }
        }
        for (i, r) in old.into_iter().enumerate() {
            if kept.contains(&i) {
                next.push(r);
            } else {
                tracing::info!(listener = %r.config.name, address = %r.config.listen, "listener stopped by reload");
                if r.config.protocol == Protocol::Udp {
                    leave_group(&r);
                }
                r.ctx.stop.cancel();
                summary.listeners_removed += 1;
                self.retire(Arc::clone(&r.ctx));
            }
        }
        let started = plan.started.commit();
        summary.listeners_added = started.len();
        next.extend(started);
        st.listeners = next;
        st.pools = pools;
        st.caches = plan.caches;
        st.rules = plan.rules;
        st.limits = plan.limits;
        st.dynblocks = plan.dynblocks;
        self.reconcile_health(config, &st.pools);
        Ok(summary)
    }

    /// Prepares the listeners of `config`: new ones are started (so a bind
    /// failure changes nothing), kept ones get their new settings and
    /// certificates ready.
    fn plan(&self, st: &State, config: &Config, pools: &[Arc<Pool>]) -> Result<Plan> {
        let parts = self.parts_for(
            config,
            pools,
            &st.caches,
            Some(&st.rules),
            Some(&st.limits),
            st.dynblocks.as_deref(),
        )?;
        let mut plan = Plan {
            caches: parts.caches(),
            rules: Arc::clone(&parts.rules),
            limits: Arc::clone(&parts.limits),
            dynblocks: parts.dynblocks.clone(),
            keep: Vec::new(),
            keys: Vec::new(),
            started: Started::default(),
        };
        for l in &config.listeners {
            let existing = st.listeners.iter().position(|r| same_sockets(&r.config, l));
            let Some((i, r)) = existing.and_then(|i| st.listeners.get(i).map(|r| (i, r))) else {
                let predecessors = self.udp_listeners_at(st, l.listen);
                plan.started
                    .push(self.start_listener(l, &parts, predecessors)?);
                continue;
            };
            if let (Some(tls), Some(files)) = (&r.tls, &l.tls) {
                let key = crate::tls::load_certified_key(files).map_err(|errors| {
                    Error::TlsFiles {
                        context: files.cert.display().to_string(),
                        errors,
                    }
                    .in_listener(&l.name)
                })?;
                plan.keys.push((Arc::clone(tls), key));
            }
            let old = r.ctx.shared.load();
            let log = Some((&r.config, &old.access_log));
            let shared = self.shared_for(l, &parts, &r.ctx.metrics, log)?;
            plan.keep.push((i, shared));
        }
        Ok(plan)
    }
}

/// Takes the sockets of a UDP listener that a reload stops out of their
/// reuseport group at once: new queries go to the sockets that replace
/// them, while the stopping workers read what was already queued and
/// answer what is in flight. Without this, until each worker noticed the
/// stop and closed its socket, the kernel kept handing it a share of new
/// queries that nobody read.
fn leave_group(r: &RunningListener) {
    for (name, fd) in &r.sockets {
        if let Err(e) = crate::sys::leave_reuseport_group(fd) {
            tracing::warn!(listener = %r.config.name, socket = %name, error = %e, "cannot take a stopped udp socket out of its group");
        }
    }
}

/// The backends of a pool's configuration, as [`Pool::update`] takes them.
fn members(pc: &PoolConfig) -> Vec<(String, std::net::SocketAddr, u32)> {
    pc.backends
        .iter()
        .map(|b| (b.name.clone(), b.address, b.weight))
        .collect()
}

/// A running pool and the configuration it takes when the reload commits.
type InPlace<'a> = Vec<(Arc<Pool>, &'a PoolConfig)>;

/// The pools of `config`: a kept pool whose policy is unchanged stays the
/// same `Arc`, to be updated in place on commit (returned with its new
/// configuration); a new policy makes a new pool holding the same backend
/// objects.
fn update_pools<'a>(
    st: &State,
    config: &'a Config,
    summary: &mut ReloadSummary,
) -> (Vec<Arc<Pool>>, InPlace<'a>) {
    let mut pools = Vec::new();
    let mut in_place = Vec::new();
    for pc in &config.pools {
        match st.pools.iter().find(|p| p.name() == pc.name) {
            Some(p) if p.policy_kind() == Some(pc.policy) => {
                in_place.push((Arc::clone(p), pc));
                pools.push(Arc::clone(p));
            }
            Some(p) => {
                let merged = Pool::new(
                    pc.name.clone(),
                    pc.policy,
                    pc.settings.clone(),
                    p.snapshot().backends().to_vec(),
                );
                merged.update(pc.settings.clone(), members(pc));
                pools.push(Arc::new(merged));
                summary.pools_changed += 1;
            }
            None => {
                pools.push(new_pool(pc));
                summary.pools_added += 1;
            }
        }
    }
    summary.pools_removed = st
        .pools
        .iter()
        .filter(|p| !config.pools.iter().any(|c| c.name == p.name()))
        .count();
    (pools, in_place)
}
