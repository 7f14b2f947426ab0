//! What the controller reports: status fields computed from the objects it watches.
//!
//! - [`conditions`]: finding and updating conditions the way KubeVirt's condition managers do.
//! - [`vmi_phase`]: a VMI's phase, node, interfaces and conditions from its pod.
//! - [`printable`]: a VM's `printableStatus`, `created`, `ready` and conditions from its VMI.

pub mod conditions;
pub mod printable;
pub mod vmi_phase;
