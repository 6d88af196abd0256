//! One-time bootstrap tokens: outside Kubernetes, the control plane hands a workload a
//! token bound to exactly one SPIFFE ID; redeeming it at the CA proves that identity once.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::spiffe::SpiffeId;

/// Outstanding bootstrap tokens. Thread-safe; share it with `Arc`.
#[derive(Default)]
pub struct BootstrapTokens {
    outstanding: Mutex<HashMap<String, SpiffeId>>,
}

impl BootstrapTokens {
    /// Issues a token for `id`: 32 random bytes, base64url without padding (43 characters).
    pub fn issue(&self, id: &SpiffeId) -> String {
        let bytes: [u8; 32] = rand::random();
        let token = URL_SAFE_NO_PAD.encode(bytes);
        self.lock().insert(token.clone(), id.clone());
        token
    }

    /// Consumes `token` and returns the identity it was issued for; `None` if it is unknown
    /// or was already redeemed.
    pub fn redeem(&self, token: &str) -> Option<SpiffeId> {
        self.lock().remove(token)
    }

    /// Number of tokens not yet redeemed.
    pub fn outstanding(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SpiffeId>> {
        // A panic while holding the lock cannot leave the map inconsistent (single insert/remove).
        self.outstanding
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl std::fmt::Debug for BootstrapTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapTokens")
            .field("outstanding", &self.outstanding())
            .finish()
    }
}
