//! Request bodies: `StartOptions`, `StopOptions`, `RestartOptions`, `PauseOptions`,
//! `UnpauseOptions` (pure).
//!
//! An empty body means the defaults, as in KubeVirt. `dryRun` is a list whose only valid entry
//! is `All` (as everywhere in Kubernetes); with it nothing is changed but every check runs.

use super::status::ApiError;
use crate::decide::subresource::{RestartOptions, StartOptions, StopOptions};
use serde::Deserialize;

/// The largest body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartWire {
    #[serde(default)]
    paused: bool,
    #[serde(default)]
    dry_run: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StopWire {
    #[serde(default)]
    grace_period: Option<i64>,
    #[serde(default)]
    dry_run: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RestartWire {
    #[serde(default)]
    grace_period_seconds: Option<i64>,
    #[serde(default)]
    dry_run: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DryRunOnly {
    #[serde(default)]
    dry_run: Option<Vec<String>>,
}

fn decode<T: Default + serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "Can not unmarshal Request body to struct, error: {e}"
        ))
    })
}

fn dry_run(values: Option<Vec<String>>) -> Result<bool, ApiError> {
    let values = values.unwrap_or_default();
    if let Some(bad) = values.iter().find(|v| *v != "All") {
        return Err(ApiError::bad_request(format!(
            "Invalid dry run value {bad:?}: only \"All\" is supported"
        )));
    }
    Ok(!values.is_empty())
}

/// `PUT …/start`: the options and whether it is a dry run.
pub fn start(body: &[u8]) -> Result<(StartOptions, bool), ApiError> {
    let wire: StartWire = decode(body)?;
    Ok((
        StartOptions {
            paused: wire.paused,
        },
        dry_run(wire.dry_run)?,
    ))
}

/// `PUT …/stop`.
pub fn stop(body: &[u8]) -> Result<(StopOptions, bool), ApiError> {
    let wire: StopWire = decode(body)?;
    Ok((
        StopOptions {
            grace_period: wire.grace_period,
        },
        dry_run(wire.dry_run)?,
    ))
}

/// `PUT …/restart`.
pub fn restart(body: &[u8]) -> Result<(RestartOptions, bool), ApiError> {
    let wire: RestartWire = decode(body)?;
    Ok((
        RestartOptions {
            grace_period_seconds: wire.grace_period_seconds,
        },
        dry_run(wire.dry_run)?,
    ))
}

/// `PUT …/pause` and `…/unpause`: whether it is a dry run.
pub fn pause(body: &[u8]) -> Result<bool, ApiError> {
    let wire: DryRunOnly = decode(body)?;
    dry_run(wire.dry_run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_table() {
        type Case<'a> = (&'a str, Result<(bool, bool), u16>);
        let cases: [Case; 7] = [
            ("", Ok((false, false))),
            ("  \n", Ok((false, false))),
            ("{}", Ok((false, false))),
            (
                r#"{"kind":"StartOptions","apiVersion":"subresources.kubevirt.io/v1","paused":true}"#,
                Ok((true, false)),
            ),
            (r#"{"dryRun":["All"]}"#, Ok((false, true))),
            (r#"{"dryRun":["Some"]}"#, Err(400)),
            ("{not json", Err(400)),
        ];
        for (body, expected) in cases {
            let got = start(body.as_bytes())
                .map(|(o, d)| (o.paused, d))
                .map_err(|e| e.code);
            assert_eq!(got, expected, "{body}");
        }
    }

    #[test]
    fn stop_restart_pause_table() {
        assert_eq!(
            stop(br#"{"gracePeriod":0,"dryRun":["All"]}"#).map_err(|e| e.code),
            Ok((
                StopOptions {
                    grace_period: Some(0)
                },
                true
            ))
        );
        assert_eq!(
            stop(b"").map_err(|e| e.code),
            Ok((StopOptions::default(), false))
        );
        assert_eq!(
            restart(br#"{"gracePeriodSeconds":0}"#).map_err(|e| e.code),
            Ok((
                RestartOptions {
                    grace_period_seconds: Some(0)
                },
                false
            ))
        );
        assert_eq!(
            restart(br#"{"gracePeriodSeconds":"x"}"#).map_err(|e| e.code),
            Err(400)
        );
        assert_eq!(pause(b"").map_err(|e| e.code), Ok(false));
        assert_eq!(
            pause(br#"{"dryRun":["All"]}"#).map_err(|e| e.code),
            Ok(true)
        );
        let e = pause(b"[").expect_err("not JSON");
        assert!(
            e.message
                .starts_with("Can not unmarshal Request body to struct, error: "),
            "{}",
            e.message
        );
    }
}
