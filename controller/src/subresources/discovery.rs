//! The documents the aggregator and `kubectl` read (pure): root paths, the API group, the
//! resource list per version, the server version, and minimal but valid OpenAPI v2 and v3.

use super::routes::{Action, Version, GROUP};
use serde_json::{json, Map, Value};
use std::hash::{Hash, Hasher};

/// `GET /`: the paths served.
pub fn root_paths() -> Value {
    let mut paths = vec![
        "/apis".to_owned(),
        "/healthz".to_owned(),
        "/openapi/v2".to_owned(),
        "/openapi/v3".to_owned(),
        format!("/apis/{GROUP}"),
    ];
    paths.extend(
        Version::ALL
            .iter()
            .map(|v| format!("/apis/{GROUP}/{}", v.as_str())),
    );
    json!({"paths": paths})
}

fn group() -> Value {
    let versions: Vec<Value> = Version::ALL
        .iter()
        .map(|v| json!({"groupVersion": format!("{GROUP}/{}", v.as_str()), "version": v.as_str()}))
        .collect();
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": GROUP,
        "versions": versions,
        "preferredVersion": versions[0],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    })
}

/// `GET /apis/subresources.kubevirt.io`.
pub fn api_group() -> Value {
    group()
}

/// `GET /apis`.
pub fn api_group_list() -> Value {
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [group()]})
}

/// `GET /apis/subresources.kubevirt.io/{version}`: every subresource served, namespaced.
pub fn api_resource_list(version: Version) -> Value {
    let resources: Vec<Value> = Action::ALL
        .iter()
        .map(|a| {
            json!({
                "name": format!("{}/{}", a.resource(), a.subresource()),
                "singularName": "",
                "namespaced": true,
                "kind": "",
                "verbs": [a.verb()],
            })
        })
        .collect();
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{GROUP}/{}", version.as_str()),
        "resources": resources,
    })
}

/// `GET …/version`: KubeVirt's `version.Info` fields, for virtshim.
pub fn server_version() -> Value {
    json!({
        "gitVersion": concat!("v", env!("CARGO_PKG_VERSION")),
        "gitCommit": option_env!("VIRTSHIM_GIT_COMMIT").unwrap_or(""),
        "gitTreeState": "",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, go_arch(std::env::consts::ARCH)),
    })
}

/// Go's spelling of an architecture, which clients print.
fn go_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn operation(version: Version, action: Action) -> (String, Value) {
    let mut path = format!(
        "/apis/{GROUP}/{}/namespaces/{{namespace}}/{}/{{name}}/{}",
        version.as_str(),
        action.resource(),
        action.subresource()
    );
    let method = action.method().as_str().to_ascii_lowercase();
    let param = |name: &str, description: &str| json!({"name": name, "in": "path", "required": true, "type": "string", "description": description});
    let mut parameters = vec![
        param("namespace", "Object name and auth scope"),
        param("name", "Name of the resource"),
    ];
    if action.is_port_forward() {
        path.push_str("/{port}");
        parameters.push(param(
            "port",
            "The target port for portforward on the VirtualMachineInstance.",
        ));
    }
    let op = json!({
        "operationId": format!("{}{}{}", version.as_str(), action.subresource(), action.resource()),
        "description": format!("{} a {}", action.subresource(), action.resource()),
        "parameters": parameters,
        "responses": {"200": {"description": "OK"}, "202": {"description": "Accepted"}},
    });
    (path, json!({ method: op }))
}

/// `GET /openapi/v2`: a Swagger 2.0 document listing the subresource paths.
pub fn openapi_v2() -> Value {
    let mut paths = Map::new();
    for version in Version::ALL {
        for action in Action::ALL {
            let (path, item) = operation(version, action);
            paths.insert(path, item);
        }
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "KubeVirt subresources (virtshim)", "version": concat!("v", env!("CARGO_PKG_VERSION"))},
        "paths": paths,
        "definitions": {},
    })
}

/// `GET /openapi/v3/apis/subresources.kubevirt.io/{version}`: an OpenAPI 3.0 document.
pub fn openapi_v3_group(version: Version) -> Value {
    let mut paths = Map::new();
    for action in Action::ALL {
        let (path, item) = operation(version, action);
        // OpenAPI 3 puts parameter types under `schema`.
        let mut item = item;
        if let Some(op) = item.as_object_mut().and_then(|o| o.values_mut().next()) {
            if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
                for p in params {
                    if let Some(p) = p.as_object_mut() {
                        p.remove("type");
                        p.insert("schema".into(), json!({"type": "string"}));
                    }
                }
            }
        }
        paths.insert(path, item);
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "KubeVirt subresources (virtshim)", "version": concat!("v", env!("CARGO_PKG_VERSION"))},
        "paths": paths,
        "components": {"schemas": {}},
    })
}

/// `GET /openapi/v3`: where each group version's document is, with a hash of its content so
/// clients can cache it.
pub fn openapi_v3_discovery() -> Value {
    let mut paths = Map::new();
    for version in Version::ALL {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        openapi_v3_group(version).to_string().hash(&mut hasher);
        let relative = format!("apis/{GROUP}/{}", version.as_str());
        paths.insert(
            relative.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{relative}?hash={:016X}", hasher.finish())}),
        );
    }
    json!({"paths": paths})
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{APIGroup, APIGroupList, APIResourceList};

    #[test]
    fn documents_decode_as_kubernetes_types() {
        let list: APIResourceList =
            serde_json::from_value(api_resource_list(Version::V1)).expect("APIResourceList");
        assert_eq!(list.group_version, "subresources.kubevirt.io/v1");
        let names: Vec<_> = list.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "virtualmachines/start",
                "virtualmachines/stop",
                "virtualmachines/restart",
                "virtualmachineinstances/pause",
                "virtualmachineinstances/unpause",
                "virtualmachineinstances/console",
                "virtualmachineinstances/vnc",
                "virtualmachineinstances/portforward",
                "virtualmachines/portforward",
            ]
        );
        assert!(list.resources.iter().all(|r| r.namespaced));
        let group: APIGroup = serde_json::from_value(api_group()).expect("APIGroup");
        assert_eq!(group.name, "subresources.kubevirt.io");
        assert_eq!(
            group.preferred_version.map(|v| v.version),
            Some("v1".to_owned())
        );
        assert_eq!(group.versions.len(), 2);
        let groups: APIGroupList = serde_json::from_value(api_group_list()).expect("list");
        assert_eq!(groups.groups.len(), 1);
        let alpha: APIResourceList =
            serde_json::from_value(api_resource_list(Version::V1alpha3)).expect("v1alpha3");
        assert_eq!(alpha.group_version, "subresources.kubevirt.io/v1alpha3");
    }

    #[test]
    fn openapi_documents() {
        let v2 = openapi_v2();
        assert_eq!(v2["swagger"], "2.0");
        let console = &v2["paths"]
            ["/apis/subresources.kubevirt.io/v1/namespaces/{namespace}/virtualmachineinstances/{name}/console"];
        assert!(console["get"]["operationId"].is_string());
        let start = &v2["paths"]
            ["/apis/subresources.kubevirt.io/v1alpha3/namespaces/{namespace}/virtualmachines/{name}/start"];
        assert!(start["put"].is_object());
        let v3 = openapi_v3_group(Version::V1);
        assert_eq!(v3["openapi"], "3.0.0");
        assert_eq!(v3["paths"].as_object().map(|p| p.len()), Some(9));
        let forward = &v3["paths"]
            ["/apis/subresources.kubevirt.io/v1/namespaces/{namespace}/virtualmachineinstances/{name}/portforward/{port}"];
        assert!(forward["get"].is_object(), "{forward}");
        let discovery = openapi_v3_discovery();
        let url = discovery["paths"]["apis/subresources.kubevirt.io/v1"]["serverRelativeURL"]
            .as_str()
            .expect("url");
        assert!(url.starts_with("/openapi/v3/apis/subresources.kubevirt.io/v1?hash="));
        // Stable across calls, so clients cache it.
        assert_eq!(discovery, openapi_v3_discovery());
    }

    #[test]
    fn version_info() {
        let v = server_version();
        assert_eq!(v["gitVersion"], concat!("v", env!("CARGO_PKG_VERSION")));
        assert!(v["platform"].as_str().is_some_and(|p| p.contains('/')));
        assert_eq!(go_arch("x86_64"), "amd64");
        assert_eq!(root_paths()["paths"][0], "/apis");
    }
}
