//! DestinationRule `tls.credentialName`: the Secret material a proxy uses to
//! originate TLS, read with the same lookup as Gateway credentials (see the
//! parent module's docs for Istio's rules).

use super::{cert_and_key, find, parse_reference, root, CredentialError, CredentialSecret, CA_SECRET_SUFFIX};
use crate::config::{ClientCertificate, PemSource};

/// What a DestinationRule `credentialName` needs, for messages.
const MUTUAL_KEYS: &str = "keys tls.crt, tls.key and ca.crt (or cert, key and cacert)";
const SIMPLE_KEYS: &str = "key ca.crt (or cacert) holding the server's CA, or put it in a Secret named <name>-cacert";

/// Where a DestinationRule `credentialName` is looked for.
#[derive(Debug, Clone, Copy)]
pub struct OriginationLookup<'a> {
    /// Namespace of the proxy that originates the TLS: where Secrets are read.
    pub proxy_namespace: &'a str,
    /// Namespace of the DestinationRule (only to explain a Secret left there).
    pub rule_namespace: &'a str,
    /// Every Secret named like the `credentialName`, or with the `-cacert`
    /// suffix, in any namespace ([`secrets_for`]).
    pub secrets: &'a [CredentialSecret],
}

/// The material of a DestinationRule `credentialName` for TLS origination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginationCredential {
    /// `Secret ns/name` (the Secrets actually read), for logs.
    pub source: String,
    /// The server's CA; `None` only with `insecureSkipVerify`.
    pub ca: Option<PemSource>,
    /// MUTUAL: the client certificate and key; `None` for SIMPLE.
    pub client: Option<ClientCertificate>,
}

/// Resolves a DestinationRule `credentialName` (`name`, `kubernetes://name`
/// or `kubernetes://ns/name`) for a proxy in `at.proxy_namespace`: MUTUAL
/// takes the client certificate and key of Secret `<name>`; unless
/// `insecure_skip_verify`, the server CA comes from `<name>-cacert`, else
/// from `<name>`.
///
/// Errors: [`CredentialError`] naming the Secret and namespace and what to
/// create (missing Secret, Secret left in the DestinationRule's namespace,
/// a cross-namespace reference, empty or missing keys, no CA).
pub fn origination_credential(
    reference: &str,
    mutual: bool,
    insecure_skip_verify: bool,
    at: OriginationLookup<'_>,
) -> Result<OriginationCredential, CredentialError> {
    let (ns, name) = parse_reference(reference, at.proxy_namespace);
    if ns != at.proxy_namespace {
        return Err(CredentialError::OriginationCrossNamespace {
            reference: reference.into(),
            namespace: ns.into(),
            searched: at.proxy_namespace.into(),
        });
    }
    let ca_name = format!("{name}{CA_SECRET_SUFFIX}");
    let (secret, ca_secret) = (find(at.secrets, ns, name), find(at.secrets, ns, &ca_name));
    let not_found = || {
        let needed = if mutual { MUTUAL_KEYS } else { SIMPLE_KEYS };
        if ns != at.rule_namespace && find(at.secrets, at.rule_namespace, name).is_some() {
            return CredentialError::OriginationInRuleNamespace {
                name: name.into(),
                searched: ns.into(),
                found: at.rule_namespace.into(),
            };
        }
        CredentialError::OriginationNotFound { name: name.into(), searched: ns.into(), needed }
    };
    let client = match (mutual, secret) {
        (false, _) => None,
        (true, None) => return Err(not_found()),
        (true, Some(s)) => cert_and_key(s).map(|(cert, key)| Some(ClientCertificate { cert, key }))?,
    };
    let mut used: Vec<&CredentialSecret> = secret.filter(|_| mutual).into_iter().collect();
    let ca = if insecure_skip_verify {
        None
    } else {
        fn from(s: Option<&CredentialSecret>) -> Result<Option<(PemSource, &CredentialSecret)>, CredentialError> {
            Ok(match s {
                Some(s) => root(s)?.map(|ca| (ca, s)),
                None => None,
            })
        }
        let (ca, s) = match from(ca_secret)? {
            Some(found) => found,
            None => match from(secret)? {
                Some(found) => found,
                None if secret.is_none() && ca_secret.is_none() => return Err(not_found()),
                None => return Err(CredentialError::NoServerCa { namespace: ns.into(), name: name.into() }),
            },
        };
        if !used.iter().any(|u| u.name == s.name) {
            used.push(s);
        }
        Some(ca)
    };
    if used.is_empty() {
        used.extend(secret.or(ca_secret));
    }
    let names: Vec<String> = used.iter().map(|s| format!("{}/{}", s.namespace, s.name)).collect();
    let source = match names.as_slice() {
        [] => format!("credentialName {name} (insecureSkipVerify, no Secret read)"),
        [one] => format!("Secret {one}"),
        many => format!("Secrets {}", many.join(" and ")),
    };
    Ok(OriginationCredential { source, ca, client })
}

/// For `veil validate`: why a DestinationRule `credentialName` can work in
/// no namespace (no Secret `<name>` for MUTUAL; neither `<name>` nor
/// `<name>-cacert` for SIMPLE without `insecureSkipVerify`), as advice;
/// `None` when a Secret exists somewhere (the proxy's namespace is checked
/// per proxy when configs are built).
pub fn missing_everywhere(secrets: &[CredentialSecret], reference: &str, mutual: bool, insecure_skip_verify: bool) -> Option<String> {
    let (_, name) = parse_reference(reference, "");
    let has = |n: &str| secrets.iter().any(|s| s.name == n);
    let ca_name = format!("{name}{CA_SECRET_SUFFIX}");
    let needed = if mutual {
        (!has(name)).then_some(MUTUAL_KEYS)
    } else {
        (!insecure_skip_verify && !has(name) && !has(&ca_name)).then_some(SIMPLE_KEYS)
    }?;
    Some(format!("no Secret {name} in any namespace; create it in the namespace of the proxy that originates this TLS (the egress gateway's, e.g. istio-system) with {needed}; until then these connections are refused"))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::credentials::tests::secret;

    fn at(secrets: &[CredentialSecret]) -> OriginationLookup<'_> {
        OriginationLookup { proxy_namespace: "istio-system", rule_namespace: "app", secrets }
    }

    #[test]
    fn cross_namespace_reference_is_refused_and_own_namespace_works() {
        let s = [secret("app", "c", &[("ca.crt", "A")]), secret("istio-system", "c", &[("ca.crt", "B")])];
        let err = origination_credential("kubernetes://app/c", false, false, at(&s)).unwrap_err();
        assert!(matches!(err, CredentialError::OriginationCrossNamespace { .. }), "{err}");
        let ok = origination_credential("kubernetes://istio-system/c", false, false, at(&s)).unwrap();
        assert_eq!((ok.ca, ok.source.as_str()), (Some(PemSource::Pem("B".into())), "Secret istio-system/c"));
    }

    #[test]
    fn insecure_simple_needs_no_secret_but_mutual_does() {
        let none = origination_credential("c", false, true, at(&[])).unwrap();
        assert_eq!((none.ca, none.client), (None, None));
        assert!(origination_credential("c", true, true, at(&[])).is_err());
        assert!(missing_everywhere(&[], "c", false, true).is_none());
        assert!(missing_everywhere(&[], "c", false, false).is_some());
        assert!(missing_everywhere(&[secret("x", "c-cacert", &[])], "kubernetes://c", false, false).is_none());
        assert!(missing_everywhere(&[secret("x", "c-cacert", &[])], "c", true, false).is_some(), "MUTUAL needs <name>");
    }
}
