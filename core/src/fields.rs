//! Field selectors (`?fieldSelector=`), as the API server reads them:
//! `field=value`, `field==value` and `field!=value`, comma-separated, all
//! of which must hold. Every kind takes `metadata.name` and
//! `metadata.namespace`; some take more (a pod's `spec.nodeName` and
//! `status.phase`, an event's `involvedObject.*`), and any other field is
//! refused by name, as the API server refuses it.

use serde_json::Value;

/// One `field op value` term.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Term {
    field: String,
    value: String,
    equal: bool,
}

/// A parsed field selector; the empty one matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<Term>,
}

/// The fields a kind can be selected by, beyond `metadata.name` and
/// `metadata.namespace` (kube-apiserver's field label conversion funcs).
fn extra_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "Pod" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "Event" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        "Node" => &["spec.unschedulable"],
        "Namespace" => &["status.phase"],
        "ReplicaSet" | "ReplicationController" => &["status.replicas"],
        "Job" => &["status.successful"],
        "PersistentVolumeClaim" | "PersistentVolume" => &["status.phase"],
        _ => &[],
    }
}

impl FieldSelector {
    /// Parses `input` for objects of `kind`.
    ///
    /// # Errors
    /// A term without an operator, or a field `kind` cannot be selected by,
    /// worded as the API server words it.
    pub fn parse(kind: &str, input: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for raw in input.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, value, equal) = if let Some((f, v)) = raw.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = raw.split_once("==") {
                (f, v, true)
            } else if let Some((f, v)) = raw.split_once('=') {
                (f, v, true)
            } else {
                return Err(format!("invalid selector: '{input}'; can't understand '{raw}'"));
            };
            let field = field.trim();
            let known = matches!(field, "metadata.name" | "metadata.namespace") || extra_fields(kind).contains(&field);
            if !known {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push(Term {
                field: field.to_string(),
                value: value.trim().to_string(),
                equal,
            });
        }
        Ok(Self { terms })
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The name a `metadata.name=` term pins, if any.
    pub fn name(&self) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.equal && t.field == "metadata.name")
            .map(|t| t.value.as_str())
    }

    /// Whether `object` has every selected field value. A missing field
    /// reads as the empty string (so `spec.nodeName=` selects unbound pods).
    pub fn matches(&self, object: &Value) -> bool {
        self.terms
            .iter()
            .all(|t| (field_value(object, &t.field) == t.value) == t.equal)
    }
}

/// A field's value as a selector compares it: strings as they are, numbers
/// and booleans in their JSON spelling, anything absent as "".
fn field_value(object: &Value, field: &str) -> String {
    let pointer = format!("/{}", field.replace('.', "/"));
    let found = match field {
        // Events name their source component under `source.component`.
        "source" => object.pointer("/source/component"),
        _ => object.pointer(&pointer),
    };
    match found {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selects_as_the_api_server_does() {
        let pod = json!({"metadata": {"name": "a", "namespace": "default"},
            "spec": {"nodeName": "n1", "hostNetwork": true}, "status": {"phase": "Running"}});
        let s = |text: &str| FieldSelector::parse("Pod", text).unwrap();
        assert!(s("").matches(&pod));
        assert!(s("metadata.name=a,status.phase==Running").matches(&pod));
        assert!(!s("metadata.name=a,status.phase!=Running").matches(&pod));
        assert!(s("spec.nodeName!=n2").matches(&pod));
        assert!(s("spec.hostNetwork=true").matches(&pod));
        assert!(!s("status.podIP=10.0.0.1").matches(&pod));
        assert!(s("status.podIP=").matches(&pod), "an absent field is empty");
        assert_eq!(s("metadata.name=a").name(), Some("a"));
        assert_eq!(s("metadata.name!=a").name(), None);

        let e = FieldSelector::parse("Deployment", "status.phase=Running").unwrap_err();
        assert_eq!(e, "field label not supported: status.phase");
        let e = FieldSelector::parse("Pod", "metadata.name").unwrap_err();
        assert!(e.contains("can't understand 'metadata.name'"), "{e}");

        let event = json!({"metadata": {"name": "x.1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "a", "uid": "u1"}, "source": {"component": "kubelet"}});
        let ev = |text: &str| FieldSelector::parse("Event", text).unwrap().matches(&event);
        assert!(ev(
            "involvedObject.kind=Pod,involvedObject.name=a,involvedObject.uid=u1"
        ));
        assert!(!ev("involvedObject.name=b"));
        assert!(ev("source=kubelet"));
    }
}
