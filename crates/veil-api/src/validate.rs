//! Checks after parsing that serde cannot express: Istio's validation rules for the fields
//! Veil acts on (reference: istio/istio `pkg/config/validation`), port ranges, and duplicate
//! resources.

use crate::error::ConfigError;
use crate::snapshot::AnyResource;
use std::collections::HashMap;

/// Builds an error for a field path of the current document (the closure finds its line).
pub(crate) type ErrorAt<'a> = &'a dyn Fn(&str, String) -> ConfigError;

fn port_ok(port: u32) -> bool {
    (1..=65535).contains(&port)
}

fn out_of_range(port: u32) -> String {
    format!("port {port} is out of range 1..65535")
}

/// Errors of one parsed document.
pub(crate) fn document(resource: &AnyResource, at: ErrorAt<'_>) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    if resource.meta().name.is_empty() {
        errors.push(at("metadata.name", "required field is missing".to_string()));
    }
    match resource {
        AnyResource::PeerAuthentication(r) => {
            if let Some(ports) = &r.spec.port_level_mtls {
                let field = "spec.portLevelMtls";
                if r.spec.is_namespace_wide() {
                    let msg = "mesh/namespace peer authentication cannot have port level mTLS; add a selector or remove portLevelMtls";
                    errors.push(at(field, msg.to_string()));
                }
                if ports.is_empty() {
                    let msg = "port level mTLS must not be empty; list at least one port or remove the field";
                    errors.push(at(field, msg.to_string()));
                }
                for port in ports.keys().filter(|p| !port_ok(**p)) {
                    errors.push(at(&format!("{field}.{port}"), out_of_range(*port)));
                }
            }
        }
        AnyResource::DestinationRule(r) if r.spec.host.trim().is_empty() => {
            let msg = "required field is missing; name the service host this rule applies to";
            errors.push(at("spec.host", msg.to_string()));
        }
        AnyResource::Gateway(r) => {
            for (i, server) in r.spec.servers.iter().enumerate() {
                if !port_ok(server.port.number) {
                    let field = format!("spec.servers[{i}].port.number");
                    errors.push(at(&field, out_of_range(server.port.number)));
                }
            }
        }
        AnyResource::Service(r) => {
            for (i, port) in r.spec.ports.iter().enumerate() {
                if !port_ok(port.port) {
                    errors.push(at(
                        &format!("spec.ports[{i}].port"),
                        out_of_range(port.port),
                    ));
                }
                if let Some(crate::k8s::TargetPort::Number(n)) = port.target_port {
                    if !port_ok(n) {
                        errors.push(at(&format!("spec.ports[{i}].targetPort"), out_of_range(n)));
                    }
                }
            }
        }
        AnyResource::ServiceEntry(r) => {
            for (i, port) in r.spec.ports.iter().enumerate() {
                if !port_ok(port.number) {
                    errors.push(at(
                        &format!("spec.ports[{i}].number"),
                        out_of_range(port.number),
                    ));
                }
            }
        }
        _ => {}
    }
    errors
}

/// One error per resource that repeats an earlier kind/namespace/name.
pub(crate) fn duplicates(resources: &[AnyResource]) -> Vec<ConfigError> {
    let mut seen: HashMap<(&str, &str, &str), &AnyResource> = HashMap::new();
    let mut errors = Vec::new();
    for r in resources {
        let key = (r.kind(), r.namespace_or_default(), r.meta().name.as_str());
        if let Some(first) = seen.get(&key) {
            let (kind, ns, name) = key;
            errors.push(ConfigError {
                file: r.source().file.clone(),
                line: r.source().line,
                field: "metadata.name".to_string(),
                message: format!(
                    "duplicate {kind} {ns}/{name}, first defined at {}; rename or remove one of them",
                    first.source()
                ),
            });
        } else {
            seen.insert(key, r);
        }
    }
    errors
}
