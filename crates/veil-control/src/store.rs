//! `ConfigStore`: the latest `ProxyConfig` of every proxy, the `MeshInput`
//! they were computed from, the proxies whose config streams are open, and
//! a signal that tells the config streams something changed.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::sync::watch;
use veil_model::{MeshInput, ProxyConfig};

/// Key of a proxy: `(namespace, pod)`.
pub type ProxyKey = (String, String);

/// Holds the current config per proxy. Publishing bumps a config's version
/// only when its content changed, so proxies see no spurious pushes.
#[derive(Debug)]
pub struct ConfigStore {
    configs: RwLock<HashMap<ProxyKey, Arc<ProxyConfig>>>,
    generation: watch::Sender<u64>,
    input: RwLock<Option<Arc<MeshInput>>>,
    streams: RwLock<HashMap<ProxyKey, (u64, ConfigStream)>>,
    next_stream: AtomicU64,
}

impl Default for ConfigStore {
    fn default() -> Self {
        Self {
            configs: RwLock::new(HashMap::new()),
            generation: watch::channel(0).0,
            input: RwLock::new(None),
            streams: RwLock::new(HashMap::new()),
            next_stream: AtomicU64::new(1),
        }
    }
}

/// An open config stream of one proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigStream {
    pub namespace: String,
    pub pod: String,
    /// Where the stream comes from (the proxy's pod address).
    pub peer: Option<SocketAddr>,
    /// Version of the last config sent on the stream; 0 before the first.
    pub sent_version: u64,
    /// When the stream opened, Unix seconds.
    pub opened_unix: u64,
}

/// Keeps a [`ConfigStream`] listed while it lives; dropping it (the stream
/// ended) removes the entry, unless a newer stream of the same proxy replaced it.
#[derive(Debug)]
pub struct StreamGuard {
    store: Arc<ConfigStore>,
    key: ProxyKey,
    id: u64,
}

impl StreamGuard {
    /// Records that config `version` was sent on this stream.
    pub fn sent(&self, version: u64) {
        if let Some((id, s)) = write(&self.store.streams).get_mut(&self.key) {
            if *id == self.id {
                s.sent_version = version;
            }
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut map = write(&self.store.streams);
        if map.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            map.remove(&self.key);
        }
    }
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ConfigStore {
    /// Computes every proxy's config from `input`, publishes them (see
    /// [`ConfigStore::publish`]) and keeps `input` for the admin API.
    /// Returns how many proxies changed.
    pub fn publish_mesh(&self, input: MeshInput) -> usize {
        let configs = input.proxy_configs();
        *write(&self.input) = Some(Arc::new(input));
        self.publish(configs)
    }

    /// The `MeshInput` last given to [`ConfigStore::publish_mesh`].
    pub fn input(&self) -> Option<Arc<MeshInput>> {
        read(&self.input).clone()
    }

    /// Lists a newly opened config stream of proxy `namespace/pod` until the
    /// returned guard is dropped.
    pub fn open_stream(self: &Arc<Self>, namespace: &str, pod: &str, peer: Option<SocketAddr>) -> StreamGuard {
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let key = (namespace.to_string(), pod.to_string());
        let opened_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let stream = ConfigStream { namespace: key.0.clone(), pod: key.1.clone(), peer, sent_version: 0, opened_unix };
        write(&self.streams).insert(key.clone(), (id, stream));
        StreamGuard { store: self.clone(), key, id }
    }

    /// The open config stream of one proxy.
    pub fn stream(&self, namespace: &str, pod: &str) -> Option<ConfigStream> {
        read(&self.streams).get(&(namespace.to_string(), pod.to_string())).map(|(_, s)| s.clone())
    }

    /// Replaces the whole set of configs. Returns how many proxies changed.
    pub fn publish(&self, configs: Vec<ProxyConfig>) -> usize {
        let mut changed = 0;
        {
            let mut map = match self.configs.write() {
                Ok(m) => m,
                Err(poisoned) => poisoned.into_inner(),
            };
            let mut next = HashMap::with_capacity(configs.len());
            // Proxies share outbound sections (`Arc`): compare each pair of
            // shared sections once, not once per proxy.
            let mut same_outbound: HashMap<(usize, usize), bool> = HashMap::new();
            for mut cfg in configs {
                let key = (cfg.node.namespace.clone(), cfg.node.pod.clone());
                let old = map.get(&key);
                let version = match old {
                    Some(old) => {
                        cfg.version = old.version;
                        let pair = (Arc::as_ptr(&old.outbound) as usize, Arc::as_ptr(&cfg.outbound) as usize);
                        let outbound_same =
                            *same_outbound.entry(pair).or_insert_with(|| old.outbound == cfg.outbound);
                        if outbound_same {
                            // Keep the old allocation so the next publish compares by pointer.
                            cfg.outbound = old.outbound.clone();
                        }
                        if outbound_same
                            && old.node == cfg.node
                            && old.inbound == cfg.inbound
                            && old.gateway == cfg.gateway
                        {
                            old.version
                        } else {
                            changed += 1;
                            old.version + 1
                        }
                    }
                    None => {
                        changed += 1;
                        1
                    }
                };
                cfg.version = version;
                next.insert(key, Arc::new(cfg));
            }
            *map = next;
        }
        if changed > 0 {
            self.generation.send_modify(|g| *g += 1);
        }
        changed
    }

    /// The current config of one proxy.
    pub fn get(&self, namespace: &str, pod: &str) -> Option<Arc<ProxyConfig>> {
        let map = match self.configs.read() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.get(&(namespace.to_string(), pod.to_string())).cloned()
    }

    /// All current configs, sorted by namespace and pod.
    pub fn all(&self) -> Vec<Arc<ProxyConfig>> {
        let map = match self.configs.read() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut v: Vec<_> = map.values().cloned().collect();
        v.sort_by(|a, b| (&a.node.namespace, &a.node.pod).cmp(&(&b.node.namespace, &b.node.pod)));
        v
    }

    /// A receiver that changes whenever any config changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}
