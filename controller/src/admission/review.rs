//! Admission reviews (`admission.k8s.io/v1`): the bytes the apiserver posts in, the verdict out.
//!
//! Pure: no I/O, no clock. The mutating hook applies exactly the defaults `virtctl validate`
//! applies ([`Object::apply_defaults`]) and answers a JSON Patch from the object as sent to its
//! defaulted form; the validating hook runs exactly the validation `virtctl validate` runs
//! ([`Object::validate`]) and denies with HTTP-style 422, every field-path message in
//! `status.message` and one `status.details.causes` entry per error. Anything that is not a
//! KubeVirt VM, VMI or VMI replica set being created or updated is allowed untouched; input that
//! is not an admission review at all is refused with a message saying why, never a panic.

use base64::Engine as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};
use serde::Deserialize;
use serde_json::{json, Value};
use virtshim_api::manifest::{ManifestError, Object, API_VERSIONS};
use virtshim_api::validate::{ErrorKind, FieldError, ValidationErrors};

/// The API version of the reviews served (the only one the webhook configurations accept).
pub const REVIEW_API_VERSION: &str = "admission.k8s.io/v1";
/// The largest review accepted. The apiserver's own request limit is 3 MiB and a review of an
/// update carries the object twice; anything bigger than this is not from the apiserver.
pub const MAX_REVIEW_BYTES: usize = 8 * 1024 * 1024;
/// At most this many errors are listed in a denial (a hostile object can produce thousands);
/// a count of the rest follows them.
pub const MAX_CAUSES: usize = 100;
/// A single error's message is cut after this many bytes (it may quote a huge field value).
pub const MAX_CAUSE_MESSAGE_BYTES: usize = 1024;

/// What a webhook does with the objects it reviews.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Apply KubeVirt's defaults, answer with a JSON Patch.
    Mutate,
    /// Validate; deny with field paths.
    Validate,
}

/// Why a request body is not an admission review this server can answer.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("the admission review is {size} bytes, more than the {MAX_REVIEW_BYTES} accepted")]
    TooLarge { size: usize },
    #[error("the request body is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("expected an {REVIEW_API_VERSION} AdmissionReview, got {api_version:?} {kind:?}")]
    NotAReview { api_version: String, kind: String },
    #[error("the AdmissionReview has no request")]
    NoRequest,
    #[error("the AdmissionReview's request is malformed: {0}")]
    BadRequest(#[source] serde_json::Error),
}

impl ReviewError {
    /// The answer to a body that is not a review: a denial with no uid (there is none to echo)
    /// and HTTP-style 400 saying what is wrong.
    pub fn to_response(&self) -> AdmissionResponse {
        AdmissionResponse {
            uid: String::new(),
            decision: Decision::Deny(Box::new(failure(400, "BadRequest", self.to_string()))),
        }
    }
}

/// The verdict on one object.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Admit as is.
    Allow,
    /// Admit after applying this patch (never empty).
    Patch(json_patch::Patch),
    /// Refuse, with the status the apiserver shows the user.
    Deny(Box<Status>),
}

/// `AdmissionReview.response`.
#[derive(Clone, Debug, PartialEq)]
pub struct AdmissionResponse {
    /// The request's uid, echoed.
    pub uid: String,
    pub decision: Decision,
}

impl AdmissionResponse {
    /// Whether the object is admitted.
    pub fn allowed(&self) -> bool {
        !matches!(self.decision, Decision::Deny(_))
    }

    /// The whole `AdmissionReview` carrying this response, as the apiserver reads it.
    pub fn to_review(&self) -> Value {
        let mut response = json!({ "uid": self.uid, "allowed": self.allowed() });
        match &self.decision {
            Decision::Allow => {}
            Decision::Patch(patch) => {
                // A patch is a list of plain operations: serializing it cannot fail.
                let bytes = serde_json::to_vec(patch).unwrap_or_default();
                response["patchType"] = json!("JSONPatch");
                response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
            }
            Decision::Deny(status) => {
                response["status"] = serde_json::to_value(status).unwrap_or(Value::Null);
            }
        }
        json!({
            "apiVersion": REVIEW_API_VERSION,
            "kind": "AdmissionReview",
            "response": response,
        })
    }

    /// [`Self::to_review`] as bytes for the HTTP body.
    pub fn to_review_bytes(&self) -> Vec<u8> {
        self.to_review().to_string().into_bytes()
    }
}

/// `request.kind` / `request.resource`: only the parts read here.
#[derive(Debug, Default, Deserialize)]
struct GroupVersionKind {
    #[serde(default)]
    group: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    kind: String,
}

/// `AdmissionReview.request`: only the parts read here; the rest (userInfo, options…) is ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request {
    #[serde(default)]
    kind: GroupVersionKind,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    operation: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    object: Option<Value>,
    #[serde(default)]
    old_object: Option<Value>,
}

/// The kinds reviewed here; any other kind is allowed without a look.
const KINDS: &[&str] = &[
    "VirtualMachine",
    "VirtualMachineInstance",
    "VirtualMachineInstanceReplicaSet",
];

/// Answers one admission review body.
pub fn review(action: Action, body: &[u8]) -> Result<AdmissionResponse, ReviewError> {
    if body.len() > MAX_REVIEW_BYTES {
        return Err(ReviewError::TooLarge { size: body.len() });
    }
    let value: Value = serde_json::from_slice(body).map_err(ReviewError::NotJson)?;
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
    let api_version = text(&value, "apiVersion").unwrap_or_default();
    let kind = text(&value, "kind").unwrap_or_default();
    if api_version != REVIEW_API_VERSION || kind != "AdmissionReview" {
        return Err(ReviewError::NotAReview { api_version, kind });
    }
    let Some(request) = value.get("request").filter(|r| !r.is_null()) else {
        return Err(ReviewError::NoRequest);
    };
    let uid = text(request, "uid").unwrap_or_default();
    let request = Request::deserialize(request).map_err(ReviewError::BadRequest)?;
    Ok(AdmissionResponse {
        uid,
        decision: decide(action, request),
    })
}

fn decide(action: Action, request: Request) -> Decision {
    let reviewed = request.kind.group == virtshim_api::GROUP
        && API_VERSIONS
            .contains(&format!("{}/{}", request.kind.group, request.kind.version).as_str())
        && KINDS.contains(&request.kind.kind.as_str())
        && request.sub_resource.as_deref().unwrap_or("").is_empty()
        && matches!(request.operation.as_str(), "CREATE" | "UPDATE");
    if !reviewed {
        return Decision::Allow;
    }
    let name = request.name.clone().unwrap_or_default();
    let Some(raw) = request.object.filter(|o| !o.is_null()) else {
        return Decision::Deny(Box::new(failure(
            400,
            "BadRequest",
            format!("the {} request carries no object", request.operation),
        )));
    };
    // As KubeVirt: an object on its way out is not held up by its spec.
    if raw
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
    {
        return Decision::Allow;
    }
    if action == Action::Validate && request.operation == "UPDATE" {
        // A spec admitted before is not re-judged when only metadata changes (labels,
        // finalizers), so an object admitted under older rules can still be finalized.
        if let Some(old) = request.old_object.as_ref() {
            if old.get("spec") == raw.get("spec") {
                return Decision::Allow;
            }
        }
    }
    let mut object = match Object::from_value(raw.clone()) {
        Ok(object) => object,
        Err(e) => return Decision::Deny(Box::new(undecodable(&request.kind.kind, &name, &e))),
    };
    match action {
        Action::Mutate => {
            let before = object.to_value();
            object.apply_defaults();
            let after = object.to_value();
            let patch = defaulting_patch(&raw, &before, &after);
            if patch.0.is_empty() {
                Decision::Allow
            } else {
                Decision::Patch(patch)
            }
        }
        Action::Validate => {
            object.apply_defaults();
            match object.validate() {
                Ok(()) => Decision::Allow,
                Err(errors) => Decision::Deny(Box::new(invalid(object.kind(), &name, &errors))),
            }
        }
    }
}

/// The patch that takes `raw` (what the apiserver sent) to the defaulted object.
///
/// The diff is taken between the decoded form before and after defaulting, so it holds only
/// what the defaults changed; it applies to `raw` because decoding keeps every field. Should it
/// not (a field the decoder normalises), the diff is taken from `raw` itself instead.
fn defaulting_patch(raw: &Value, before: &Value, after: &Value) -> json_patch::Patch {
    let patch = json_patch::diff(before, after);
    let mut probe = raw.clone();
    if json_patch::patch(&mut probe, &patch.0).is_ok() {
        patch
    } else {
        json_patch::diff(raw, after)
    }
}

/// A `Status` with `status: Failure`.
fn failure(code: i32, reason: &str, message: String) -> Status {
    Status {
        code: Some(code),
        message: Some(message),
        reason: Some(reason.to_owned()),
        status: Some("Failure".to_owned()),
        ..Status::default()
    }
}

/// The Kubernetes cause type for an error, as `field.ErrorType` names them.
fn cause_type(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Required { .. } => "FieldValueRequired",
        ErrorKind::Invalid { .. } => "FieldValueInvalid",
        ErrorKind::UnsupportedValue { .. } | ErrorKind::NotSupported { .. } => {
            "FieldValueNotSupported"
        }
        ErrorKind::Duplicate { .. } => "FieldValueDuplicate",
        ErrorKind::Forbidden { .. } => "FieldValueForbidden",
    }
}

/// Cuts `text` to at most [`MAX_CAUSE_MESSAGE_BYTES`], on a character boundary.
fn bounded(mut text: String) -> String {
    if text.len() > MAX_CAUSE_MESSAGE_BYTES {
        let mut end = MAX_CAUSE_MESSAGE_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// One validation error as a denial carries it: the whole line for `status.message`, and the
/// cause, whose message leaves the field out because `field` already names it.
struct DenialCause {
    line: String,
    cause: StatusCause,
}

/// A 422 `Invalid` status listing `causes`, as the apiserver builds one for a bad object.
fn unprocessable(kind: &str, name: &str, causes: Vec<DenialCause>) -> Status {
    let total = causes.len();
    let causes: Vec<DenialCause> = causes.into_iter().take(MAX_CAUSES).collect();
    let mut message = causes
        .iter()
        .map(|c| c.line.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    if total > causes.len() {
        message.push_str(&format!(
            "; and {} more validation errors",
            total - causes.len()
        ));
    }
    Status {
        details: Some(StatusDetails {
            causes: Some(causes.into_iter().map(|c| c.cause).collect()),
            group: Some(virtshim_api::GROUP.to_owned()),
            kind: Some(kind.to_owned()),
            name: (!name.is_empty()).then(|| name.to_owned()),
            ..StatusDetails::default()
        }),
        ..failure(422, "Invalid", message)
    }
}

/// A cause for `field`. kubectl and virtctl print each cause as `<field>: <message>`, so a
/// message that starts with the field (as the validator's errors do) loses that prefix here;
/// otherwise the path showed twice (`spec.volumes[0].hostDisk: spec.volumes[0].hostDisk: …`).
fn cause(field: &str, reason: &str, line: String) -> DenialCause {
    let line = bounded(line);
    let message = line
        .strip_prefix(field)
        .and_then(|rest| rest.strip_prefix(": "))
        .unwrap_or(&line)
        .to_owned();
    DenialCause {
        cause: StatusCause {
            field: Some(field.to_owned()),
            message: Some(message),
            reason: Some(reason.to_owned()),
        },
        line,
    }
}

/// The denial for an object that fails validation: one cause per error, in field order.
fn invalid(kind: &str, name: &str, errors: &ValidationErrors) -> Status {
    let causes = errors
        .iter()
        .map(|e: &FieldError| cause(e.path.as_str(), cause_type(&e.kind), e.to_string()))
        .collect();
    unprocessable(kind, name, causes)
}

/// The denial for an object that does not even decode (a wrong type somewhere, no kind…).
fn undecodable(kind: &str, name: &str, error: &ManifestError) -> Status {
    let one = match error {
        ManifestError::Decode { path, .. } => cause(path, "FieldValueInvalid", error.to_string()),
        ManifestError::MissingField { field } => {
            cause(field, "FieldValueRequired", error.to_string())
        }
        ManifestError::UnsupportedKind { .. } => {
            cause("apiVersion", "FieldValueNotSupported", error.to_string())
        }
        ManifestError::NotAnObject | ManifestError::Yaml(_) | ManifestError::Json(_) => {
            cause("(root)", "FieldValueInvalid", error.to_string())
        }
    };
    unprocessable(kind, name, vec![one])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn examples_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/examples/kubevirt")
    }

    /// The example's first document as JSON, as the apiserver would send it.
    fn example(name: &str) -> Value {
        let path = examples_dir().join(name);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        serde_yaml_ng::from_str(&text).expect("example is YAML")
    }

    fn resource(kind: &str) -> &'static str {
        match kind {
            "VirtualMachine" => "virtualmachines",
            "VirtualMachineInstance" => "virtualmachineinstances",
            _ => "virtualmachineinstancereplicasets",
        }
    }

    /// An AdmissionReview as the apiserver posts it for `object`.
    pub(crate) fn review_of(operation: &str, object: &Value, old: Option<&Value>) -> Vec<u8> {
        let kind = object["kind"].as_str().unwrap_or("VirtualMachine");
        let version = object["apiVersion"]
            .as_str()
            .and_then(|v| v.split('/').nth(1))
            .unwrap_or("v1");
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "kubevirt.io", "version": version, "kind": kind},
                "resource": {"group": "kubevirt.io", "version": version, "resource": resource(kind)},
                "requestKind": {"group": "kubevirt.io", "version": version, "kind": kind},
                "name": object["metadata"]["name"],
                "namespace": "default",
                "operation": operation,
                "userInfo": {"username": "admin", "groups": ["system:authenticated"]},
                "object": object,
                "oldObject": old,
                "dryRun": false,
                "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
            }
        })
        .to_string()
        .into_bytes()
    }

    /// What `virtctl validate -o json` prints for the object.
    fn defaulted(object: &Value) -> Value {
        let mut decoded = Object::from_value(object.clone()).expect("decodes");
        decoded.apply_defaults();
        decoded.to_value()
    }

    /// A VMI without a firmware UUID gets a random one (as in KubeVirt): compare the rest, and
    /// that one is there.
    pub(crate) fn same_but_random_uuid(
        patched: &Value,
        expected: &Value,
        original: &Value,
    ) -> bool {
        const UUID: &str = "/spec/domain/firmware/uuid";
        if original.pointer(UUID).is_some() || original["kind"] != json!("VirtualMachineInstance") {
            return patched == expected;
        }
        let uuid = patched.pointer(UUID).and_then(Value::as_str).unwrap_or("");
        if uuid.len() != 36 {
            return false;
        }
        let strip = |v: &Value| {
            let mut v = v.clone();
            if let Some(firmware) = v
                .pointer_mut("/spec/domain/firmware")
                .and_then(Value::as_object_mut)
            {
                firmware.remove("uuid");
            }
            v
        };
        strip(patched) == strip(expected)
    }

    fn denial(response: &AdmissionResponse) -> &Status {
        match &response.decision {
            Decision::Deny(status) => status,
            other => panic!("expected a denial, got {other:?}"),
        }
    }

    #[test]
    fn admission_examples_table() {
        // (example, patched by the mutating hook, field named in the denial)
        let table: &[(&str, bool, Option<&str>)] = &[
            ("vm-alpine-multipvc.yaml", true, None),
            ("vm-cirros-sata.yaml", true, None),
            ("vm-cirros.yaml", true, None),
            ("vm-priorityclass.yaml", true, None),
            ("vmi-alpine-efi.yaml", true, None),
            ("vmi-ephemeral.yaml", true, None),
            ("vmi-fedora.yaml", true, None),
            ("vmi-kernel-boot.yaml", true, None),
            ("vmi-masquerade.yaml", true, None),
            ("vmi-migratable.yaml", true, None),
            ("vmi-nocloud.yaml", true, None),
            ("vmi-pvc.yaml", true, None),
            // KubeVirt defaults a replica set's VMIs, not its template: nothing to patch.
            ("vmi-replicaset-cirros.yaml", false, None),
            ("vmi-sata.yaml", true, None),
            ("vmi-secureboot.yaml", true, None),
            ("vmi-host-disk.yaml", true, Some("spec.volumes[0].hostDisk")),
            ("vmi-multus-ptp.yaml", true, Some("spec.networks[0].multus")),
        ];
        let mut listed: Vec<&str> = table.iter().map(|row| row.0).collect();
        listed.sort_unstable();
        let mut on_disk: Vec<String> = std::fs::read_dir(examples_dir())
            .expect("examples folder")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".yaml"))
            .collect();
        on_disk.sort();
        assert_eq!(listed, on_disk, "every example is in the table");

        for &(file, patched, denied_field) in table {
            let object = example(file);
            let body = review_of("CREATE", &object, None);

            let mutated = review(Action::Mutate, &body).expect("a review");
            assert_eq!(
                mutated.uid, "705ab4f5-6393-11e8-b7cc-42010a800002",
                "{file}"
            );
            let mut result = object.clone();
            match (&mutated.decision, patched) {
                (Decision::Patch(patch), true) => {
                    json_patch::patch(&mut result, &patch.0)
                        .unwrap_or_else(|e| panic!("{file}: patch does not apply: {e}"));
                }
                (Decision::Allow, false) => {}
                (other, _) => panic!("{file}: unexpected mutation {other:?}"),
            }
            assert!(
                same_but_random_uuid(&result, &defaulted(&object), &object),
                "{file}: patched = defaulted\n{result:#}"
            );
            // The patched object is a fixed point: mutating it again changes nothing.
            let again = review(Action::Mutate, &review_of("UPDATE", &result, Some(&result)))
                .expect("a review");
            assert_eq!(
                again.decision,
                Decision::Allow,
                "{file}: defaults are idempotent"
            );

            // The validating hook sees the mutated object, as in the apiserver.
            let validated =
                review(Action::Validate, &review_of("CREATE", &result, None)).expect("a review");
            match denied_field {
                None => assert_eq!(validated.decision, Decision::Allow, "{file}"),
                Some(field) => {
                    let status = denial(&validated);
                    assert_eq!(status.code, Some(422), "{file}");
                    assert_eq!(status.reason.as_deref(), Some("Invalid"));
                    let message = status.message.as_deref().unwrap_or("");
                    assert!(message.starts_with(field), "{file}: {message}");
                    let causes = status
                        .details
                        .as_ref()
                        .and_then(|d| d.causes.as_ref())
                        .expect("causes");
                    assert_eq!(causes[0].field.as_deref(), Some(field), "{file}");
                    assert_eq!(causes[0].reason.as_deref(), Some("FieldValueNotSupported"));
                    // kubectl prints a cause as `<field>: <message>`: the path once.
                    let printed =
                        format!("{field}: {}", causes[0].message.as_deref().unwrap_or(""));
                    assert_eq!(printed.matches(field).count(), 1, "{file}: {printed}");
                    assert_eq!(message.matches(field).count(), 1, "{file}: {message}");
                }
            }
        }
    }

    #[test]
    fn admission_denial_lists_every_error_as_virtctl_prints_them() {
        let mut vm = example("vm-cirros.yaml");
        vm["spec"]["running"] = json!(true);
        vm["spec"]["runStrategy"] = json!("Always");
        vm["spec"]["template"]["spec"]["domain"]["devices"]["disks"][0]["disk"]["bus"] =
            json!("scsi-floppy");
        let response = review(Action::Validate, &review_of("CREATE", &vm, None)).expect("a review");
        let status = denial(&response);

        let mut object = Object::from_value(vm).expect("decodes");
        object.apply_defaults();
        let errors = object.validate().expect_err("invalid");
        assert!(errors.0.len() >= 2, "{errors}");
        let printed: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(status.message.as_deref(), Some(printed.join("; ").as_str()));
        let details = status.details.as_ref().expect("details");
        assert_eq!(details.kind.as_deref(), Some("VirtualMachine"));
        assert_eq!(details.name.as_deref(), Some("vm-cirros"));
        let causes = details.causes.as_ref().expect("causes");
        let fields: Vec<&str> = causes.iter().filter_map(|c| c.field.as_deref()).collect();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(fields, paths);
        // Each cause as kubectl prints it (`<field>: <message>`) is the validator's line.
        let as_kubectl: Vec<String> = causes
            .iter()
            .map(|c| {
                format!(
                    "{}: {}",
                    c.field.as_deref().unwrap_or(""),
                    c.message.as_deref().unwrap_or("")
                )
            })
            .collect();
        assert_eq!(as_kubectl, printed);

        let review = response.to_review();
        assert_eq!(review["response"]["allowed"], json!(false));
        assert_eq!(review["response"]["status"]["code"], json!(422));
        assert_eq!(review["response"]["uid"], json!(response.uid));
    }

    #[test]
    fn admission_patch_is_base64_json_patch() {
        let vm = example("vm-cirros.yaml");
        let response = review(Action::Mutate, &review_of("CREATE", &vm, None)).expect("a review");
        let review = response.to_review();
        assert_eq!(review["apiVersion"], json!("admission.k8s.io/v1"));
        assert_eq!(review["response"]["allowed"], json!(true));
        assert_eq!(review["response"]["patchType"], json!("JSONPatch"));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(review["response"]["patch"].as_str().expect("patch"))
            .expect("base64");
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("a JSON Patch");
        let mut result = vm.clone();
        json_patch::patch(&mut result, &patch.0).expect("applies");
        assert_eq!(result, defaulted(&vm));
    }

    #[test]
    fn admission_patch_applies_to_what_the_apiserver_sends() {
        // The apiserver's encoding has nulls and server-set metadata the decoder normalises.
        let mut vmi = example("vmi-ephemeral.yaml");
        vmi["metadata"]["creationTimestamp"] = Value::Null;
        vmi["metadata"]["uid"] = json!("0a7d7f8e-3b0c-4a51-9d36-4b7c1f0d5e11");
        vmi["metadata"]["managedFields"] = json!([{"manager": "kubectl", "operation": "Update"}]);
        let response = review(Action::Mutate, &review_of("CREATE", &vmi, None)).expect("a review");
        let Decision::Patch(patch) = &response.decision else {
            panic!("expected a patch, got {response:?}");
        };
        let mut result = vmi.clone();
        json_patch::patch(&mut result, &patch.0).expect("applies");
        assert_eq!(result["metadata"], vmi["metadata"], "metadata untouched");
        let spec_of = |v: &Value| json!({"kind": v["kind"], "spec": v["spec"]});
        assert!(same_but_random_uuid(
            &spec_of(&result),
            &spec_of(&defaulted(&vmi)),
            &spec_of(&vmi)
        ));
    }

    #[test]
    fn admission_update_is_defaulted_and_validated_when_the_spec_changes() {
        let old = defaulted(&example("vmi-ephemeral.yaml"));
        // Only metadata changed: admitted without a new look at the spec.
        let mut relabelled = old.clone();
        relabelled["metadata"]["labels"] = json!({"app": "x"});
        let response = review(
            Action::Validate,
            &review_of("UPDATE", &relabelled, Some(&old)),
        )
        .expect("a review");
        assert_eq!(response.decision, Decision::Allow);
        // The spec changed to something invalid: refused.
        let mut broken = old.clone();
        broken["spec"]["volumes"][0]["hostDisk"] = json!({"path": "/etc", "type": "Disk"});
        let response =
            review(Action::Validate, &review_of("UPDATE", &broken, Some(&old))).expect("a review");
        let status = denial(&response);
        assert!(
            status
                .message
                .as_deref()
                .unwrap_or("")
                .contains("spec.volumes[0]"),
            "{status:?}"
        );
        // An already defaulted object needs no patch.
        let response =
            review(Action::Mutate, &review_of("UPDATE", &old, Some(&old))).expect("a review");
        assert_eq!(response.decision, Decision::Allow);
    }

    #[test]
    fn admission_leaves_other_requests_alone() {
        let vm = example("vm-cirros.yaml");
        let mut broken = vm.clone();
        broken["spec"]["runStrategy"] = json!("Sometimes");
        let body = |operation: &str, edit: &dyn Fn(&mut Value)| {
            let mut review: Value =
                serde_json::from_slice(&review_of(operation, &broken, None)).expect("json");
            edit(&mut review);
            serde_json::to_vec(&review).expect("json")
        };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("DELETE", body("DELETE", &|_| {})),
            ("CONNECT", body("CONNECT", &|_| {})),
            (
                "a pod",
                body("CREATE", &|r| {
                    r["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "Pod"})
                }),
            ),
            (
                "another group",
                body("CREATE", &|r| {
                    r["request"]["kind"]["group"] = json!("example.com")
                }),
            ),
            (
                "a status update",
                body("UPDATE", &|r| r["request"]["subResource"] = json!("status")),
            ),
            (
                "being deleted",
                body("UPDATE", &|r| {
                    r["request"]["object"]["metadata"]["deletionTimestamp"] =
                        json!("2026-01-01T00:00:00Z")
                }),
            ),
        ];
        for (what, body) in cases {
            for action in [Action::Mutate, Action::Validate] {
                let response = review(action, &body).expect("a review");
                assert_eq!(response.decision, Decision::Allow, "{what} {action:?}");
            }
        }
        // The same object created is refused, naming the field.
        let response = review(Action::Validate, &body("CREATE", &|_| {})).expect("a review");
        let status = denial(&response);
        assert!(
            status
                .message
                .as_deref()
                .unwrap_or("")
                .starts_with("spec.runStrategy"),
            "{status:?}"
        );
    }

    #[test]
    fn admission_hostile_input_is_refused_with_a_reason() {
        let vm = example("vm-cirros.yaml");
        let mut deep = String::new();
        for _ in 0..100_000 {
            deep.push('[');
        }
        let huge = vec![b' '; MAX_REVIEW_BYTES + 1];
        let garbage: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("not JSON", b"\x00\xff garbage {".to_vec()),
            ("deep nesting", deep.into_bytes()),
            ("too large", huge),
            ("a number", b"42".to_vec()),
            ("another kind", br#"{"apiVersion":"v1","kind":"Pod"}"#.to_vec()),
            (
                "no request",
                br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
            ),
            (
                "request of the wrong shape",
                br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","operation":7}}"#.to_vec(),
            ),
        ];
        for (what, body) in garbage {
            let error = review(Action::Validate, &body).expect_err(what);
            let response = error.to_response();
            assert!(!response.allowed(), "{what}");
            let status = denial(&response);
            assert_eq!(status.code, Some(400), "{what}");
            assert!(
                !status.message.as_deref().unwrap_or("").is_empty(),
                "{what}"
            );
        }

        // Reviews of objects that are not what they claim: denied, naming the field.
        type Edit = Box<dyn Fn(&mut Value)>;
        let edits: Vec<(&str, Edit, &str)> = vec![
            (
                "wrong type",
                Box::new(|o| {
                    o["spec"]["template"]["spec"]["domain"]["cpu"] = json!({"cores": "many"})
                }),
                "spec.template.spec.domain.cpu.cores",
            ),
            ("no object", Box::new(|o| *o = Value::Null), ""),
            (
                "not an object",
                Box::new(|o| *o = json!([1, 2, 3])),
                "(root)",
            ),
            (
                "no apiVersion",
                Box::new(|o| {
                    o.as_object_mut().map(|m| m.remove("apiVersion"));
                }),
                "apiVersion",
            ),
        ];
        for (what, edit, field) in edits {
            let mut object = vm.clone();
            edit(&mut object);
            let mut body: Value =
                serde_json::from_slice(&review_of("CREATE", &vm, None)).expect("json");
            body["request"]["object"] = object;
            let body = serde_json::to_vec(&body).expect("json");
            for action in [Action::Mutate, Action::Validate] {
                let response = review(action, &body).expect("a review");
                let status = denial(&response);
                let causes = status.details.as_ref().and_then(|d| d.causes.as_ref());
                match causes {
                    Some(causes) => assert_eq!(causes[0].field.as_deref(), Some(field), "{what}"),
                    None => assert_eq!(field, "", "{what}: {status:?}"),
                }
            }
        }
    }

    #[test]
    fn admission_many_errors_are_bounded() {
        let mut vmi = example("vmi-ephemeral.yaml");
        let long = "x".repeat(5_000);
        for i in 0..1000 {
            vmi["spec"][format!("unknownField{i}{long}")] = json!(1);
        }
        let response =
            review(Action::Validate, &review_of("CREATE", &vmi, None)).expect("a review");
        let status = denial(&response);
        let causes = status
            .details
            .as_ref()
            .and_then(|d| d.causes.as_ref())
            .expect("causes");
        assert_eq!(causes.len(), MAX_CAUSES);
        assert!(causes
            .iter()
            .all(|c| c.message.as_deref().unwrap_or("").len() <= MAX_CAUSE_MESSAGE_BYTES + 3));
        let message = status.message.as_deref().unwrap_or("");
        assert!(
            message.ends_with("and 900 more validation errors"),
            "{}",
            &message[message.len() - 80..]
        );
    }
}
