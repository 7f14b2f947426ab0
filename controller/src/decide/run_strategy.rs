//! The run strategy a VM is under: `spec.runStrategy`, else the deprecated `spec.running`.
//!
//! Every VM decision starts from this, and the subresources must also know *which* field holds
//! it, because `start` / `stop` rewrite that same field (KubeVirt patches `spec.running` on VMs
//! that use it, `spec.runStrategy` otherwise).

use std::fmt;
use std::str::FromStr;
use virtshim_api::types::VirtualMachineSpec;

/// `spec.runStrategy` values virtshim implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunStrategy {
    /// A VMI always exists; finished ones are replaced.
    Always,
    /// A failed VMI is replaced; a succeeded one is not.
    RerunOnFailure,
    /// Only the start / stop / restart subresources create or delete the VMI.
    Manual,
    /// No VMI.
    Halted,
    /// One VMI, left alone once it finishes.
    Once,
}

impl RunStrategy {
    pub const ALL: [RunStrategy; 5] = [
        RunStrategy::Always,
        RunStrategy::RerunOnFailure,
        RunStrategy::Manual,
        RunStrategy::Halted,
        RunStrategy::Once,
    ];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::RerunOnFailure => "RerunOnFailure",
            Self::Manual => "Manual",
            Self::Halted => "Halted",
            Self::Once => "Once",
        }
    }

    /// Strategies that restart a VMI by themselves, and so can crash-loop (KubeVirt counts start
    /// failures and shows `CrashLoopBackOff` only for these).
    pub fn restarts_automatically(self) -> bool {
        matches!(self, Self::Always | Self::RerunOnFailure | Self::Once)
    }
}

impl fmt::Display for RunStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStrategy {
    type Err = RunStrategyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| RunStrategyError::Unsupported(s.to_owned()))
    }
}

/// Why a VM has no usable run strategy. Validation rejects both at admission; these exist for
/// objects that were stored before the webhook ran.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RunStrategyError {
    /// KubeVirt's own wording (`VirtualMachine.RunStrategy()`).
    #[error("running and runstrategy are mutually exclusive")]
    BothSet,
    #[error("runStrategy {0:?} is not supported")]
    Unsupported(String),
}

/// Which field of the spec the strategy came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrategyField {
    /// `spec.runStrategy`.
    RunStrategy,
    /// `spec.running` (deprecated).
    Running,
    /// Neither is set: Halted by default.
    Neither,
}

/// The run strategy in force and where it is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EffectiveRunStrategy {
    pub strategy: RunStrategy,
    pub field: StrategyField,
}

/// Reads a VM's run strategy: `runStrategy`, else `running: true` → Always and
/// `running: false` → Halted, neither → Halted; both set is an error.
pub fn effective(spec: &VirtualMachineSpec) -> Result<EffectiveRunStrategy, RunStrategyError> {
    match (&spec.run_strategy, spec.running) {
        (Some(_), Some(_)) => Err(RunStrategyError::BothSet),
        (Some(s), None) => Ok(EffectiveRunStrategy {
            strategy: s.parse()?,
            field: StrategyField::RunStrategy,
        }),
        (None, Some(running)) => Ok(EffectiveRunStrategy {
            strategy: if running {
                RunStrategy::Always
            } else {
                RunStrategy::Halted
            },
            field: StrategyField::Running,
        }),
        (None, None) => Ok(EffectiveRunStrategy {
            strategy: RunStrategy::Halted,
            field: StrategyField::Neither,
        }),
    }
}

/// A rewrite of the VM's run strategy to Always (start) or Halted (stop), in the field the VM
/// already uses: the subresources and the Halted-with-start-request case write this.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunStrategyPatch {
    /// Set `spec.runStrategy`, which currently holds `from`.
    RunStrategy { from: RunStrategy, to: RunStrategy },
    /// Set the deprecated `spec.running`, which currently holds `from`.
    Running { from: Option<bool>, to: bool },
}

impl RunStrategyPatch {
    /// Makes the VM run (Always / `running: true`).
    pub fn start(current: EffectiveRunStrategy) -> Self {
        Self::new(current, true)
    }

    /// Makes the VM stop (Halted / `running: false`).
    pub fn stop(current: EffectiveRunStrategy) -> Self {
        Self::new(current, false)
    }

    fn new(current: EffectiveRunStrategy, run: bool) -> Self {
        match current.field {
            StrategyField::RunStrategy => Self::RunStrategy {
                from: current.strategy,
                to: if run {
                    RunStrategy::Always
                } else {
                    RunStrategy::Halted
                },
            },
            // KubeVirt writes `running` whenever `runStrategy` is absent.
            StrategyField::Running => Self::Running {
                from: Some(current.strategy == RunStrategy::Always),
                to: run,
            },
            StrategyField::Neither => Self::Running {
                from: None,
                to: run,
            },
        }
    }

    /// The JSON patch (RFC 6902) for the VM's main resource. It tests the old value first, so
    /// that a concurrent change makes the apiserver refuse the patch (a 409 for the caller).
    pub fn json_patch(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Self::RunStrategy { from, to } => json!([
                {"op": "test", "path": "/spec/runStrategy", "value": from.as_str()},
                {"op": "replace", "path": "/spec/runStrategy", "value": to.as_str()},
            ]),
            Self::Running {
                from: Some(from),
                to,
            } => json!([
                {"op": "test", "path": "/spec/running", "value": from},
                {"op": "replace", "path": "/spec/running", "value": to},
            ]),
            Self::Running { from: None, to } => json!([
                {"op": "add", "path": "/spec/running", "value": to},
            ]),
        }
    }
}

#[cfg(test)]
// Table rows are tuples, one column per input and expectation.
#[allow(clippy::type_complexity)]
mod tests {
    use super::*;

    fn spec(run_strategy: Option<&str>, running: Option<bool>) -> VirtualMachineSpec {
        VirtualMachineSpec {
            running,
            run_strategy: run_strategy.map(str::to_owned),
            ..Default::default()
        }
    }

    #[test]
    fn effective_strategy() {
        use RunStrategy::*;
        use StrategyField as F;
        let table: &[(
            Option<&str>,
            Option<bool>,
            Result<(RunStrategy, F), RunStrategyError>,
        )] = &[
            (None, None, Ok((Halted, F::Neither))),
            (None, Some(true), Ok((Always, F::Running))),
            (None, Some(false), Ok((Halted, F::Running))),
            (Some("Always"), None, Ok((Always, F::RunStrategy))),
            (
                Some("RerunOnFailure"),
                None,
                Ok((RerunOnFailure, F::RunStrategy)),
            ),
            (Some("Manual"), None, Ok((Manual, F::RunStrategy))),
            (Some("Halted"), None, Ok((Halted, F::RunStrategy))),
            (Some("Once"), None, Ok((Once, F::RunStrategy))),
            (Some("Always"), Some(true), Err(RunStrategyError::BothSet)),
            (Some("Halted"), Some(false), Err(RunStrategyError::BothSet)),
            (
                Some("WaitAsReceiver"),
                None,
                Err(RunStrategyError::Unsupported("WaitAsReceiver".into())),
            ),
            (
                Some("always"),
                None,
                Err(RunStrategyError::Unsupported("always".into())),
            ),
        ];
        for (rs, running, want) in table {
            let got = effective(&spec(*rs, *running)).map(|e| (e.strategy, e.field));
            assert_eq!(&got, want, "runStrategy={rs:?} running={running:?}");
        }
    }

    #[test]
    fn names_round_trip() {
        for s in RunStrategy::ALL {
            assert_eq!(s.as_str().parse::<RunStrategy>(), Ok(s));
            assert_eq!(s.to_string(), s.as_str());
        }
    }

    #[test]
    fn which_strategies_crash_loop() {
        use RunStrategy::*;
        for (s, want) in [
            (Always, true),
            (RerunOnFailure, true),
            (Once, true),
            (Manual, false),
            (Halted, false),
        ] {
            assert_eq!(s.restarts_automatically(), want, "{s}");
        }
    }
    #[test]
    fn patches_keep_the_field_in_use() {
        use serde_json::json;
        use RunStrategy::*;
        let eff = |strategy, field| EffectiveRunStrategy { strategy, field };
        let table = [
            (
                RunStrategyPatch::start(eff(Halted, StrategyField::RunStrategy)),
                json!([
                    {"op": "test", "path": "/spec/runStrategy", "value": "Halted"},
                    {"op": "replace", "path": "/spec/runStrategy", "value": "Always"},
                ]),
            ),
            (
                RunStrategyPatch::stop(eff(Once, StrategyField::RunStrategy)),
                json!([
                    {"op": "test", "path": "/spec/runStrategy", "value": "Once"},
                    {"op": "replace", "path": "/spec/runStrategy", "value": "Halted"},
                ]),
            ),
            (
                RunStrategyPatch::stop(eff(Always, StrategyField::Running)),
                json!([
                    {"op": "test", "path": "/spec/running", "value": true},
                    {"op": "replace", "path": "/spec/running", "value": false},
                ]),
            ),
            (
                RunStrategyPatch::start(eff(Halted, StrategyField::Running)),
                json!([
                    {"op": "test", "path": "/spec/running", "value": false},
                    {"op": "replace", "path": "/spec/running", "value": true},
                ]),
            ),
            (
                RunStrategyPatch::start(eff(Halted, StrategyField::Neither)),
                json!([{"op": "add", "path": "/spec/running", "value": true}]),
            ),
        ];
        for (patch, want) in table {
            assert_eq!(patch.json_patch(), want, "{patch:?}");
        }
    }
}
