//! SPIFFE identities as Istio uses them: `spiffe://<trust-domain>/ns/<namespace>/sa/<sa>`.
//!
//! Follows the SPIFFE ID spec (<https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md>)
//! and Istio's `pkg/spiffe` (`spiffe.ParseIdentity`), which only accepts the `ns/<ns>/sa/<sa>` path.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::IdentityError;

const SCHEME: &str = "spiffe://";
/// Longest trust domain the SPIFFE spec allows, in bytes.
const MAX_TRUST_DOMAIN_LEN: usize = 255;
/// Longest SPIFFE ID the SPIFFE spec allows, in bytes.
const MAX_ID_LEN: usize = 2048;

/// A SPIFFE trust domain, e.g. `cluster.local` (Istio's default `trustDomain`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// The trust domain as text, e.g. `"cluster.local"`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for TrustDomain {
    /// `cluster.local`, Istio's default trust domain.
    fn default() -> Self {
        Self("cluster.local".to_string())
    }
}

impl FromStr for TrustDomain {
    type Err = IdentityError;

    /// Accepts lowercase letters, digits, `.`, `-`, `_` (SPIFFE spec, section 2.1).
    fn from_str(s: &str) -> Result<Self, IdentityError> {
        let bad = |reason| IdentityError::InvalidTrustDomain {
            value: s.to_string(),
            reason,
        };
        if s.is_empty() {
            return Err(bad("it is empty"));
        }
        if s.len() > MAX_TRUST_DOMAIN_LEN {
            return Err(bad("it is longer than 255 bytes"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        {
            return Err(bad("it contains a character outside [a-z0-9._-]"));
        }
        Ok(Self(s.to_string()))
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustDomain({})", self.0)
    }
}

/// A workload identity `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
///
/// Serialized (serde) as its string form.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: TrustDomain,
    namespace: String,
    service_account: String,
}

impl SpiffeId {
    /// Builds an ID from trusted parts (for example a Kubernetes namespace and service
    /// account name). It does not validate them; use [`SpiffeId::try_new`] for untrusted input.
    pub fn new(td: &TrustDomain, namespace: &str, service_account: &str) -> Self {
        Self {
            trust_domain: td.clone(),
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
        }
    }

    /// Like [`SpiffeId::new`] but validates the segments.
    ///
    /// # Errors
    /// [`IdentityError::InvalidSpiffeId`] if a segment is empty, `.`/`..` or contains a
    /// character outside `[A-Za-z0-9._-]`.
    pub fn try_new(
        td: &TrustDomain,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, IdentityError> {
        let id = Self::new(td, namespace, service_account);
        for segment in [namespace, service_account] {
            if let Err(reason) = check_segment(segment) {
                return Err(IdentityError::InvalidSpiffeId {
                    value: id.to_string(),
                    reason,
                });
            }
        }
        Ok(id)
    }

    /// The trust domain part.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The namespace part (`ns/<namespace>`).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The service account part (`sa/<service-account>`).
    pub fn service_account(&self) -> &str {
        &self.service_account
    }
}

fn check_segment(segment: &str) -> Result<(), String> {
    if segment.is_empty() {
        return Err("a path segment is empty".to_string());
    }
    if segment == "." || segment == ".." {
        return Err(format!("path segment {segment:?} is not allowed"));
    }
    if !segment
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(format!(
            "path segment {segment:?} contains a character outside [A-Za-z0-9._-]"
        ));
    }
    Ok(())
}

impl FromStr for SpiffeId {
    type Err = IdentityError;

    /// Strict parse of `spiffe://<td>/ns/<ns>/sa/<sa>`: no query, fragment, port,
    /// user info, trailing slash or extra segments.
    fn from_str(s: &str) -> Result<Self, IdentityError> {
        let bad = |reason: String| IdentityError::InvalidSpiffeId {
            value: s.to_string(),
            reason,
        };
        if s.len() > MAX_ID_LEN {
            return Err(bad("it is longer than 2048 bytes".to_string()));
        }
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| bad("it does not start with spiffe://".to_string()))?;
        let (td, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("it has no path".to_string()))?;
        let trust_domain = TrustDomain::from_str(td).map_err(|e| bad(e.to_string()))?;
        let segments: Vec<&str> = path.split('/').collect();
        match segments.as_slice() {
            ["ns", ns, "sa", sa] => {
                check_segment(ns).map_err(&bad)?;
                check_segment(sa).map_err(&bad)?;
                Ok(Self {
                    trust_domain,
                    namespace: (*ns).to_string(),
                    service_account: (*sa).to_string(),
                })
            }
            _ => Err(bad(
                "the path is not /ns/<namespace>/sa/<service-account>".to_string()
            )),
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({self})")
    }
}

impl Serialize for SpiffeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SpiffeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for TrustDomain {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TrustDomain {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_strictness() {
        let id: SpiffeId = "spiffe://cluster.local/ns/default/sa/bookinfo-ratings"
            .parse()
            .unwrap();
        assert_eq!(id.namespace(), "default");
        assert_eq!(id.service_account(), "bookinfo-ratings");
        assert_eq!(
            id.to_string(),
            "spiffe://cluster.local/ns/default/sa/bookinfo-ratings"
        );
        for bad in [
            "spiffe://cluster.local/ns/default/sa/x/",
            "spiffe://cluster.local/ns/default/sa/",
            "spiffe://Cluster.local/ns/a/sa/b",
            "spiffe://cluster.local:80/ns/a/sa/b",
            "spiffe://cluster.local/ns/a/sa/b?x=1",
            "https://cluster.local/ns/a/sa/b",
            "spiffe://cluster.local/sa/b/ns/a",
            "spiffe://cluster.local/ns/../sa/b",
            "spiffe:///ns/a/sa/b",
        ] {
            assert!(bad.parse::<SpiffeId>().is_err(), "{bad} should be refused");
        }
        assert!(SpiffeId::try_new(&TrustDomain::default(), "a/b", "c").is_err());
        assert!(SpiffeId::try_new(&TrustDomain::default(), "a", "c").is_ok());
        assert_eq!(TrustDomain::default().as_str(), "cluster.local");
    }
}
