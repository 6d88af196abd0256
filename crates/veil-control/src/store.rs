//! `ConfigStore`: the latest `ProxyConfig` of every proxy, and a signal
//! that tells the config streams something changed.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use tokio::sync::watch;
use veil_model::ProxyConfig;

/// Key of a proxy: `(namespace, pod)`.
pub type ProxyKey = (String, String);

/// Holds the current config per proxy. Publishing bumps a config's version
/// only when its content changed, so proxies see no spurious pushes.
#[derive(Debug)]
pub struct ConfigStore {
    configs: RwLock<HashMap<ProxyKey, Arc<ProxyConfig>>>,
    generation: watch::Sender<u64>,
}

impl Default for ConfigStore {
    fn default() -> Self {
        Self {
            configs: RwLock::new(HashMap::new()),
            generation: watch::channel(0).0,
        }
    }
}

impl ConfigStore {
    /// Replaces the whole set of configs. Returns how many proxies changed.
    pub fn publish(&self, configs: Vec<ProxyConfig>) -> usize {
        let mut changed = 0;
        {
            let mut map = match self.configs.write() {
                Ok(m) => m,
                Err(poisoned) => poisoned.into_inner(),
            };
            let mut next = HashMap::with_capacity(configs.len());
            for mut cfg in configs {
                let key = (cfg.node.namespace.clone(), cfg.node.pod.clone());
                let old = map.get(&key);
                let version = match old {
                    Some(old) => {
                        cfg.version = old.version;
                        if **old == cfg {
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
