//! Certificate rotation: renew at half-life (with +-10% jitter) using the current
//! certificate as proof, with a fresh key each time; on failure retry with exponential
//! backoff (1 s .. 60 s) while the current certificate stays in use.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::cert::WorkloadCertificate;
use crate::client::{request_certificate, CaAuth, CaClientConfig, WorkloadKey};
use crate::error::IdentityError;
use crate::spiffe::SpiffeId;
use crate::x509;

/// First retry delay after a failed renewal.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Starts renewing `first` in the background and returns a receiver that always holds the
/// certificate to use. Each renewal requests `ttl`. The task ends when every receiver is
/// dropped. Must be called inside a Tokio runtime; outside one, no rotation happens and an
/// error is logged.
pub fn spawn_rotation(
    cfg: CaClientConfig,
    id: SpiffeId,
    first: WorkloadCertificate,
    ttl: Duration,
) -> watch::Receiver<Arc<WorkloadCertificate>> {
    let (tx, rx) = watch::channel(Arc::new(first));
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn(rotate(cfg, id, tx, ttl));
        }
        Err(e) => {
            tracing::error!(identity = %id, error = %e, "certificate rotation not started: no Tokio runtime")
        }
    }
    rx
}

async fn rotate(
    cfg: CaClientConfig,
    id: SpiffeId,
    tx: watch::Sender<Arc<WorkloadCertificate>>,
    ttl: Duration,
) {
    loop {
        let current = tx.borrow().clone();
        let jitter = rand::random_range(0.9..1.1);
        let wait = renewal_delay(&current, ttl, SystemTime::now(), jitter);
        tokio::select! {
            () = tx.closed() => return,
            () = tokio::time::sleep(wait) => {}
        }
        let mut backoff = BACKOFF_MIN;
        let renewed = loop {
            match renew_once(&cfg, &id, &current, ttl).await {
                Ok(cert) => break cert,
                Err(e) => {
                    let expired = current.not_after <= SystemTime::now();
                    tracing::warn!(
                        identity = %id, error = %e, retry_in_s = backoff.as_secs(), current_expired = expired,
                        "certificate renewal failed; the current certificate stays in use"
                    );
                    tokio::select! {
                        () = tx.closed() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        };
        tracing::info!(identity = %id, not_after = x509::rfc3339(renewed.not_after), "renewed workload certificate");
        if tx.send(Arc::new(renewed)).is_err() {
            return;
        }
    }
}

async fn renew_once(
    cfg: &CaClientConfig,
    id: &SpiffeId,
    current: &Arc<WorkloadCertificate>,
    ttl: Duration,
) -> Result<WorkloadCertificate, IdentityError> {
    let key = WorkloadKey::generate()?;
    request_certificate(cfg, &key, id, CaAuth::Certificate(current.clone()), ttl).await
}

/// Time from `now` until `cert` should be renewed: half of its lifetime (or of `ttl` when
/// shorter, since the CA backdates `notBefore`) after its effective start, scaled by
/// `jitter` (0.9..1.1). Zero when that moment has passed.
fn renewal_delay(
    cert: &WorkloadCertificate,
    ttl: Duration,
    now: SystemTime,
    jitter: f64,
) -> Duration {
    let lifetime = cert
        .not_after
        .duration_since(cert.not_before)
        .unwrap_or_default();
    let effective = if ttl.is_zero() {
        lifetime
    } else {
        lifetime.min(ttl)
    };
    let start = cert
        .not_after
        .checked_sub(effective)
        .unwrap_or(cert.not_before);
    let renew_at = start + (effective / 2).mul_f64(jitter.clamp(0.0, 2.0));
    renew_at.duration_since(now).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CertificateAuthority, TrustDomain};

    #[test]
    fn renews_at_half_life_with_jitter() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path(), TrustDomain::default()).unwrap();
        let id = SpiffeId::new(&TrustDomain::default(), "ns", "sa");
        let now = SystemTime::now();
        let cert = ca
            .issue_for_test(
                &id,
                now - Duration::from_secs(60),
                now + Duration::from_secs(100),
            )
            .unwrap();
        let d = renewal_delay(&cert, Duration::from_secs(100), now, 1.0);
        assert!((49..=51).contains(&d.as_secs()), "{d:?}");
        let early = renewal_delay(&cert, Duration::from_secs(100), now, 0.9);
        let late = renewal_delay(&cert, Duration::from_secs(100), now, 1.1);
        assert!(early < d && d < late);
        let past = renewal_delay(
            &cert,
            Duration::from_secs(100),
            now + Duration::from_secs(90),
            1.0,
        );
        assert_eq!(past, Duration::ZERO);
    }
}
