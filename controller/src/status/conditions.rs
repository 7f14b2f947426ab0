//! Reading and updating condition lists the way KubeVirt's condition managers do.
//!
//! One rule matters for `kubectl` output and for not rewriting status on every pass: updating a
//! condition replaces it only when its status or reason changed, so `lastTransitionTime` stays
//! the time of the last real transition.

use virtshim_api::types::Condition;

/// Condition status values.
pub const TRUE: &str = "True";
pub const FALSE: &str = "False";

/// The condition of this type, if any.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether a condition of this type has this status.
pub fn has_status(conditions: &[Condition], type_: &str, status: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == status)
}

/// Whether a condition of this type has this status and reason.
pub fn has_status_and_reason(
    conditions: &[Condition],
    type_: &str,
    status: &str,
    reason: &str,
) -> bool {
    find(conditions, type_)
        .is_some_and(|c| c.status == status && c.reason.as_deref() == Some(reason))
}

/// Adds `condition`, or replaces the one of its type if its status or reason differ.
pub fn upsert(conditions: &mut Vec<Condition>, condition: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(existing) => {
            if existing.status != condition.status || existing.reason != condition.reason {
                *existing = condition;
            }
        }
        None => conditions.push(condition),
    }
}

/// Removes every condition of this type.
pub fn remove(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(type_: &str, status: &str, reason: Option<&str>, message: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.map(str::to_owned),
            message: Some(message.into()),
            ..Default::default()
        }
    }

    #[test]
    fn upsert_keeps_unchanged_conditions() {
        let old = cond("Ready", TRUE, None, "old");
        // (new, expected stored message)
        let table = [
            (cond("Ready", TRUE, None, "new"), "old"),
            (cond("Ready", FALSE, None, "new"), "new"),
            (cond("Ready", TRUE, Some("R"), "new"), "new"),
        ];
        for (new, message) in table {
            let mut list = vec![old.clone(), cond("Paused", TRUE, None, "p")];
            upsert(&mut list, new.clone());
            assert_eq!(list.len(), 2);
            assert_eq!(list[0].message.as_deref(), Some(message), "{new:?}");
        }
        let mut list = vec![];
        upsert(&mut list, old.clone());
        assert_eq!(list, vec![old]);
    }

    #[test]
    fn lookups() {
        let list = vec![
            cond("Ready", TRUE, None, ""),
            cond("Synchronized", FALSE, Some("ErrImagePull"), ""),
        ];
        assert!(has_status(&list, "Ready", TRUE));
        assert!(!has_status(&list, "Ready", FALSE));
        assert!(!has_status(&list, "Paused", TRUE));
        assert!(has_status_and_reason(
            &list,
            "Synchronized",
            FALSE,
            "ErrImagePull"
        ));
        assert!(!has_status_and_reason(
            &list,
            "Synchronized",
            FALSE,
            "ImagePullBackOff"
        ));
        let mut list = list;
        remove(&mut list, "Ready");
        assert!(find(&list, "Ready").is_none());
        assert_eq!(list.len(), 1);
    }
}
