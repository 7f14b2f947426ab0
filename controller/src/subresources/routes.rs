//! Which request is which: a method and a path in, a [`Route`] out (pure).
//!
//! Paths are KubeVirt's (`pkg/virt-api/api.go`): discovery and OpenAPI for the aggregator, the
//! version and health endpoints, and `…/namespaces/{ns}/{resource}/{name}/{subresource}` for
//! the actions. Namespaces and names must be Kubernetes names, so that nothing a user typed
//! reaches a handler URL or a log line unchecked.

use hyper::Method;

/// The API group.
pub const GROUP: &str = "subresources.kubevirt.io";

/// A served version of [`GROUP`]; both have the same resources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V1alpha3,
}

impl Version {
    /// Served versions, preferred first.
    pub const ALL: [Version; 2] = [Version::V1, Version::V1alpha3];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V1alpha3 => "v1alpha3",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// What the user asks for on one VM or VMI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Restart,
    Pause,
    Unpause,
    Console,
    Vnc,
    /// `virtualmachineinstances/{name}/portforward/{port}[/{protocol}]` (`virtctl port-forward`,
    /// `virtctl ssh`, `virtctl scp`).
    PortForward,
    /// The same on `virtualmachines/{name}`: the VM's VMI.
    VmPortForward,
}

impl Action {
    /// The resource the action is a subresource of.
    pub fn resource(self) -> &'static str {
        match self {
            Self::Start | Self::Stop | Self::Restart | Self::VmPortForward => "virtualmachines",
            _ => "virtualmachineinstances",
        }
    }

    /// The subresource name.
    pub fn subresource(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
            Self::Pause => "pause",
            Self::Unpause => "unpause",
            Self::Console => "console",
            Self::Vnc => "vnc",
            Self::PortForward | Self::VmPortForward => "portforward",
        }
    }

    /// The one HTTP method it answers.
    pub fn method(self) -> Method {
        match self {
            Self::Console | Self::Vnc | Self::PortForward | Self::VmPortForward => Method::GET,
            _ => Method::PUT,
        }
    }

    /// The RBAC verb KubeVirt authorizes it with (`mapHttpVerbToRbacVerb`: GET on a named
    /// object is `get`, PUT is `update`).
    pub fn verb(self) -> &'static str {
        match self.method() {
            Method::GET => "get",
            _ => "update",
        }
    }

    /// Every action, for discovery.
    pub const ALL: [Action; 9] = [
        Action::Start,
        Action::Stop,
        Action::Restart,
        Action::Pause,
        Action::Unpause,
        Action::Console,
        Action::Vnc,
        Action::PortForward,
        Action::VmPortForward,
    ];

    /// Whether the path goes on with `{port}[/{protocol}]`.
    pub fn is_port_forward(self) -> bool {
        matches!(self, Self::PortForward | Self::VmPortForward)
    }

    fn parse(resource: &str, subresource: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.resource() == resource && a.subresource() == subresource)
    }
}

/// The port a port-forward asks for: KubeVirt's `{port}` and `{protocol}` (default `tcp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forward {
    pub port: u16,
    pub udp: bool,
}

impl Forward {
    pub fn protocol(self) -> &'static str {
        if self.udp {
            "udp"
        } else {
            "tcp"
        }
    }

    fn parse(port: &str, protocol: Option<&str>) -> Result<Self, RouteError> {
        let invalid = || RouteError::InvalidPort(format!("{port}/{}", protocol.unwrap_or("tcp")));
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(invalid)?;
        let udp = match protocol {
            None | Some("tcp") => false,
            Some("udp") => true,
            Some(_) => return Err(invalid()),
        };
        Ok(Self { port, udp })
    }
}

/// One action on one named object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub version: Version,
    pub namespace: String,
    pub name: String,
    pub action: Action,
    /// For a port-forward, its port (always set then, never otherwise).
    pub forward: Option<Forward>,
}

/// What a request is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/`: the root paths.
    Root,
    /// `/apis`: an APIGroupList with our group.
    Groups,
    /// `/apis/subresources.kubevirt.io`: the APIGroup.
    Group,
    /// `/apis/subresources.kubevirt.io/{version}`: the APIResourceList.
    Resources(Version),
    /// `/apis/subresources.kubevirt.io/{version}/version`.
    ServerVersion,
    /// `/healthz` and `/apis/subresources.kubevirt.io/{version}/healthz`.
    Healthz,
    OpenApiV2,
    /// `/openapi/v3`: the OpenAPI v3 discovery document.
    OpenApiV3,
    /// `/openapi/v3/apis/subresources.kubevirt.io/{version}`.
    OpenApiV3Group(Version),
    /// An action; the only routes that need an authenticated, authorized user.
    Action(Target),
}

impl Route {
    /// Whether the route needs an authenticated user (KubeVirt's `noAuthEndpoints` are the
    /// rest).
    pub fn needs_auth(&self) -> bool {
        matches!(self, Self::Action(_))
    }
}

/// Why a request has no route.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("the server could not find the requested resource")]
    NotFound,
    #[error("{method} is not supported here; use {allowed}")]
    MethodNotAllowed { method: String, allowed: Method },
    #[error("{what} {value:?} is not a valid Kubernetes name")]
    InvalidName { what: &'static str, value: String },
    #[error("invalid port {0:?}: a port is 1 to 65535 and the protocol tcp or udp")]
    InvalidPort(String),
}

/// A DNS-1123 subdomain (what namespaces, VM and VMI names are), at most 253 characters.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Routes a request.
pub fn route(method: &Method, path: &str) -> Result<Route, RouteError> {
    let trimmed = path.trim_end_matches('/');
    let segments: Vec<&str> = if trimmed.is_empty() {
        Vec::new()
    } else {
        trimmed.trim_start_matches('/').split('/').collect()
    };
    let only_get = |route: Route| {
        if method == Method::GET || method == Method::HEAD {
            Ok(route)
        } else {
            Err(RouteError::MethodNotAllowed {
                method: method.to_string(),
                allowed: Method::GET,
            })
        }
    };
    match segments.as_slice() {
        [] => only_get(Route::Root),
        ["healthz"] => only_get(Route::Healthz),
        ["apis"] => only_get(Route::Groups),
        ["apis", GROUP] => only_get(Route::Group),
        ["openapi", "v2"] => only_get(Route::OpenApiV2),
        ["openapi", "v3"] => only_get(Route::OpenApiV3),
        ["openapi", "v3", "apis", GROUP, v] => {
            let v = Version::parse(v).ok_or(RouteError::NotFound)?;
            only_get(Route::OpenApiV3Group(v))
        }
        ["apis", GROUP, v, rest @ ..] => {
            let version = Version::parse(v).ok_or(RouteError::NotFound)?;
            match rest {
                [] => only_get(Route::Resources(version)),
                ["version"] => only_get(Route::ServerVersion),
                ["healthz"] => only_get(Route::Healthz),
                ["namespaces", namespace, resource, name, subresource, forward @ ..] => {
                    let action =
                        Action::parse(resource, subresource).ok_or(RouteError::NotFound)?;
                    let forward = match (action.is_port_forward(), forward) {
                        (false, []) => None,
                        (true, [port]) => Some(Forward::parse(port, None)?),
                        (true, [port, protocol]) => Some(Forward::parse(port, Some(protocol))?),
                        _ => return Err(RouteError::NotFound),
                    };
                    for (what, value) in [("namespace", namespace), ("name", name)] {
                        if !is_valid_name(value) {
                            return Err(RouteError::InvalidName {
                                what,
                                value: (*value).to_owned(),
                            });
                        }
                    }
                    if method != action.method() {
                        return Err(RouteError::MethodNotAllowed {
                            method: method.to_string(),
                            allowed: action.method(),
                        });
                    }
                    Ok(Route::Action(Target {
                        version,
                        namespace: (*namespace).to_owned(),
                        name: (*name).to_owned(),
                        action,
                        forward,
                    }))
                }
                _ => Err(RouteError::NotFound),
            }
        }
        _ => Err(RouteError::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(version: Version, action: Action) -> Route {
        Route::Action(Target {
            version,
            namespace: "default".into(),
            name: "vm-cirros".into(),
            action,
            forward: None,
        })
    }

    fn forward(action: Action, port: u16, udp: bool) -> Route {
        Route::Action(Target {
            version: Version::V1,
            namespace: "default".into(),
            name: "vm-cirros".into(),
            action,
            forward: Some(Forward { port, udp }),
        })
    }

    #[test]
    fn routes_table() {
        let base = "/apis/subresources.kubevirt.io/v1/namespaces/default";
        let cases: Vec<(Method, String, Result<Route, RouteError>)> = vec![
            (Method::GET, "/".into(), Ok(Route::Root)),
            (Method::GET, "".into(), Ok(Route::Root)),
            (Method::GET, "/healthz".into(), Ok(Route::Healthz)),
            (Method::GET, "/apis".into(), Ok(Route::Groups)),
            (
                Method::GET,
                "/apis/subresources.kubevirt.io".into(),
                Ok(Route::Group),
            ),
            (
                Method::GET,
                "/apis/subresources.kubevirt.io/v1".into(),
                Ok(Route::Resources(Version::V1)),
            ),
            (
                Method::GET,
                "/apis/subresources.kubevirt.io/v1alpha3/".into(),
                Ok(Route::Resources(Version::V1alpha3)),
            ),
            (
                Method::GET,
                "/apis/subresources.kubevirt.io/v1/version".into(),
                Ok(Route::ServerVersion),
            ),
            (
                Method::GET,
                "/apis/subresources.kubevirt.io/v1alpha3/healthz".into(),
                Ok(Route::Healthz),
            ),
            (Method::GET, "/openapi/v2".into(), Ok(Route::OpenApiV2)),
            (Method::GET, "/openapi/v3".into(), Ok(Route::OpenApiV3)),
            (
                Method::GET,
                "/openapi/v3/apis/subresources.kubevirt.io/v1".into(),
                Ok(Route::OpenApiV3Group(Version::V1)),
            ),
            (
                Method::GET,
                "/apis/subresources.kubevirt.io/v2".into(),
                Err(RouteError::NotFound),
            ),
            (
                Method::GET,
                "/apis/kubevirt.io/v1".into(),
                Err(RouteError::NotFound),
            ),
            (
                Method::PUT,
                format!("{base}/virtualmachines/vm-cirros/start"),
                Ok(target(Version::V1, Action::Start)),
            ),
            (
                Method::PUT,
                format!("{base}/virtualmachines/vm-cirros/stop"),
                Ok(target(Version::V1, Action::Stop)),
            ),
            (
                Method::PUT,
                format!("{base}/virtualmachines/vm-cirros/restart"),
                Ok(target(Version::V1, Action::Restart)),
            ),
            (
                Method::PUT,
                format!("{base}/virtualmachineinstances/vm-cirros/pause"),
                Ok(target(Version::V1, Action::Pause)),
            ),
            (
                Method::PUT,
                format!("{base}/virtualmachineinstances/vm-cirros/unpause"),
                Ok(target(Version::V1, Action::Unpause)),
            ),
            (
                Method::GET,
                format!("{base}/virtualmachineinstances/vm-cirros/console"),
                Ok(target(Version::V1, Action::Console)),
            ),
            (
                Method::GET,
                "/apis/subresources.kubevirt.io/v1alpha3/namespaces/default/virtualmachineinstances/vm-cirros/vnc".into(),
                Ok(target(Version::V1alpha3, Action::Vnc)),
            ),
            // start is a VM's, console a VMI's.
            (
                Method::PUT,
                format!("{base}/virtualmachineinstances/vm-cirros/start"),
                Err(RouteError::NotFound),
            ),
            (
                Method::GET,
                format!("{base}/virtualmachines/vm-cirros/console"),
                Err(RouteError::NotFound),
            ),
            (
                Method::GET,
                format!("{base}/virtualmachines/vm-cirros/start"),
                Err(RouteError::MethodNotAllowed {
                    method: "GET".into(),
                    allowed: Method::PUT,
                }),
            ),
            (
                Method::POST,
                "/apis".into(),
                Err(RouteError::MethodNotAllowed {
                    method: "POST".into(),
                    allowed: Method::GET,
                }),
            ),
            (
                Method::PUT,
                format!("{base}/virtualmachines/Bad_Name/start"),
                Err(RouteError::InvalidName {
                    what: "name",
                    value: "Bad_Name".into(),
                }),
            ),
            (
                Method::PUT,
                "/apis/subresources.kubevirt.io/v1/namespaces/%2e%2e/virtualmachines/a/start"
                    .into(),
                Err(RouteError::InvalidName {
                    what: "namespace",
                    value: "%2e%2e".into(),
                }),
            ),
            (
                Method::PUT,
                format!("{base}/virtualmachines/vm-cirros/start/extra"),
                Err(RouteError::NotFound),
            ),
            // Port forwarding: `{port}`, `{port}/{protocol}`, on a VMI or a VM.
            (
                Method::GET,
                format!("{base}/virtualmachineinstances/vm-cirros/portforward/22"),
                Ok(forward(Action::PortForward, 22, false)),
            ),
            (
                Method::GET,
                format!("{base}/virtualmachines/vm-cirros/portforward/53/udp"),
                Ok(forward(Action::VmPortForward, 53, true)),
            ),
            (
                Method::GET,
                format!("{base}/virtualmachineinstances/vm-cirros/portforward"),
                Err(RouteError::NotFound),
            ),
            (
                Method::GET,
                format!("{base}/virtualmachineinstances/vm-cirros/portforward/70000"),
                Err(RouteError::InvalidPort("70000/tcp".into())),
            ),
            (
                Method::GET,
                format!("{base}/virtualmachineinstances/vm-cirros/portforward/22/sctp"),
                Err(RouteError::InvalidPort("22/sctp".into())),
            ),
            (
                Method::GET,
                format!("{base}/virtualmachineinstances/vm-cirros/console/22"),
                Err(RouteError::NotFound),
            ),
        ];
        for (method, path, expected) in cases {
            assert_eq!(route(&method, &path), expected, "{method} {path}");
        }
    }

    #[test]
    fn auth_and_verbs() {
        assert!(!Route::Healthz.needs_auth());
        assert!(!Route::Resources(Version::V1).needs_auth());
        assert!(target(Version::V1, Action::Console).needs_auth());
        let verbs: Vec<_> = Action::ALL
            .iter()
            .map(|a| (a.subresource(), a.verb()))
            .collect();
        assert_eq!(
            verbs,
            vec![
                ("start", "update"),
                ("stop", "update"),
                ("restart", "update"),
                ("pause", "update"),
                ("unpause", "update"),
                ("console", "get"),
                ("vnc", "get"),
                ("portforward", "get"),
                ("portforward", "get"),
            ]
        );
    }

    #[test]
    fn names() {
        for (name, ok) in [
            ("vm-cirros", true),
            ("a.b-c.d", true),
            ("", false),
            ("-a", false),
            ("a-", false),
            ("a..b", false),
            ("UPPER", false),
            ("a/b", false),
            ("a%20b", false),
            (&"a".repeat(254), false),
        ] {
            assert_eq!(is_valid_name(name), ok, "{name}");
        }
    }
}
