//! The standard `OTEL_*` variables, read and checked once at start-up: a setting calsync cannot
//! honour is an error naming the variable, never a silent fallback to other behaviour.
//!
//! Owns: parsing those variables into [`OtelConfig`]. Must not touch: the exporter or the
//! subscriber (see `otlp.rs`). Values are never echoed in errors: endpoints may carry
//! credentials and `OTEL_EXPORTER_OTLP_HEADERS` usually holds an API key.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry_sdk::trace::Sampler;

/// A setting calsync cannot use.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{variable}: {reason}")]
pub struct TelemetryError {
    pub variable: &'static str,
    pub reason: String,
}

fn invalid(variable: &'static str, reason: impl Into<String>) -> TelemetryError {
    TelemetryError { variable, reason: reason.into() }
}

/// Where and how traces are exported.
#[derive(Debug)]
pub struct OtelConfig {
    /// The full URL export requests are POSTed to (…/v1/traces).
    pub traces_url: String,
    /// Extra request headers (collector credentials); values are secret.
    pub headers: HashMap<String, String>,
    pub timeout: Option<Duration>,
    pub sampler: Sampler,
    /// Whether OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES name the service already.
    pub service_named: bool,
}

/// The BatchSpanProcessor variables: the SDK reads them itself, but skips a bad value silently.
const BSP_NUMBERS: [&str; 5] = [
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_EXPORT_TIMEOUT",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_BSP_MAX_CONCURRENT_EXPORTS",
];

impl OtelConfig {
    /// `Ok(None)`: traces are off (no endpoint, OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none).
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Option<Self>, TelemetryError> {
        let get = |k: &str| lookup(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        match get("OTEL_SDK_DISABLED").map(|v| v.to_ascii_lowercase()).as_deref() {
            None | Some("false") => {}
            Some("true") => return Ok(None),
            Some(_) => return Err(invalid("OTEL_SDK_DISABLED", "must be true or false")),
        }
        match get("OTEL_TRACES_EXPORTER").as_deref() {
            None | Some("otlp") => {}
            Some("none") => return Ok(None),
            Some(_) => return Err(invalid("OTEL_TRACES_EXPORTER", "calsync exports traces with otlp only (or none)")),
        }
        let traces_url = match (get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), get("OTEL_EXPORTER_OTLP_ENDPOINT")) {
            // The per-signal endpoint is used as it is (OTLP exporter specification).
            (Some(url), _) => checked_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &url)?,
            (None, Some(base)) => {
                checked_url("OTEL_EXPORTER_OTLP_ENDPOINT", &base)?;
                format!("{}/v1/traces", base.trim_end_matches('/'))
            }
            (None, None) => return Ok(None),
        };
        for variable in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
            if let Some(p) = get(variable)
                && p != "http/protobuf"
            {
                return Err(invalid(
                    variable,
                    "calsync exports over http/protobuf only (grpc and http/json are not built in)",
                ));
            }
        }
        for variable in ["OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION"] {
            if get(variable).is_some_and(|c| c != "none") {
                return Err(invalid(variable, "compression is not built in; leave it unset or none"));
            }
        }
        let mut headers = HashMap::new();
        // The per-signal list wins for a name both give.
        for variable in ["OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"] {
            if let Some(list) = get(variable) {
                headers.extend(parse_headers(variable, &list)?);
            }
        }
        let mut timeout = None;
        for variable in ["OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"] {
            if let Some(ms) = get(variable) {
                timeout = Some(Duration::from_millis(number(variable, &ms)?));
            }
        }
        for variable in BSP_NUMBERS {
            if let Some(n) = get(variable)
                && (number(variable, &n)? == 0 && variable != "OTEL_BSP_SCHEDULE_DELAY")
            {
                return Err(invalid(variable, "must be greater than 0"));
            }
        }
        let sampler = sampler(get("OTEL_TRACES_SAMPLER").as_deref(), get("OTEL_TRACES_SAMPLER_ARG").as_deref())?;
        let attributes = get("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default();
        for (i, pair) in attributes.split(',').filter(|p| !p.trim().is_empty()).enumerate() {
            if pair.split_once('=').is_none_or(|(k, _)| k.trim().is_empty()) {
                return Err(invalid("OTEL_RESOURCE_ATTRIBUTES", format!("entry {} is not key=value", i + 1)));
            }
        }
        let service_named = get("OTEL_SERVICE_NAME").is_some()
            || attributes.split(',').any(|p| p.split_once('=').is_some_and(|(k, _)| k.trim() == "service.name"));
        Ok(Some(OtelConfig { traces_url, headers, timeout, sampler, service_named }))
    }
}

fn checked_url(variable: &'static str, value: &str) -> Result<String, TelemetryError> {
    let url = reqwest::Url::parse(value).map_err(|_| {
        invalid(variable, "not a URL; give the collector's OTLP/HTTP address, e.g. http://otel-collector:4318")
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid(variable, "must be an http:// or https:// URL with a host"));
    }
    Ok(value.to_string())
}

fn number(variable: &'static str, value: &str) -> Result<u64, TelemetryError> {
    value.parse().map_err(|_| invalid(variable, "must be a whole number (milliseconds or a count)"))
}

/// `name=value,name2=value2`, values percent-encoded (W3C Baggage octets).
fn parse_headers(variable: &'static str, list: &str) -> Result<HashMap<String, String>, TelemetryError> {
    let mut out = HashMap::new();
    for (i, entry) in list.split(',').filter(|e| !e.trim().is_empty()).enumerate() {
        let bad = |what: &str| invalid(variable, format!("entry {} {what}", i + 1));
        let (name, value) = entry.split_once('=').ok_or_else(|| bad("is not name=value"))?;
        let name = name.trim();
        reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad("has an invalid header name"))?;
        let value = percent_encoding::percent_decode_str(value.trim())
            .decode_utf8()
            .map_err(|_| bad("has a value that is not UTF-8 once percent-decoded"))?
            .into_owned();
        reqwest::header::HeaderValue::from_str(&value).map_err(|_| bad("has a value HTTP cannot carry"))?;
        out.insert(name.to_string(), value);
    }
    Ok(out)
}

fn sampler(name: Option<&str>, arg: Option<&str>) -> Result<Sampler, TelemetryError> {
    let ratio = || -> Result<f64, TelemetryError> {
        match arg {
            None => Ok(1.0),
            Some(a) => a.parse::<f64>().ok().filter(|r| (0.0..=1.0).contains(r)).ok_or_else(|| {
                invalid("OTEL_TRACES_SAMPLER_ARG", "must be a number from 0 to 1 (the share of traces kept)")
            }),
        }
    };
    let parent = |root: Sampler| Sampler::ParentBased(Box::new(root));
    Ok(match name.unwrap_or("parentbased_always_on") {
        "always_on" => Sampler::AlwaysOn,
        "always_off" => Sampler::AlwaysOff,
        "traceidratio" => Sampler::TraceIdRatioBased(ratio()?),
        "parentbased_always_on" => parent(Sampler::AlwaysOn),
        "parentbased_always_off" => parent(Sampler::AlwaysOff),
        "parentbased_traceidratio" => parent(Sampler::TraceIdRatioBased(ratio()?)),
        _ => {
            return Err(invalid(
                "OTEL_TRACES_SAMPLER",
                "must be always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio",
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(vars: &[(&str, &str)]) -> Result<Option<OtelConfig>, TelemetryError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        OtelConfig::from_lookup(&|k| map.get(k).cloned())
    }

    fn error_of(vars: &[(&str, &str)]) -> TelemetryError {
        match read(vars) {
            Err(e) => e,
            Ok(c) => panic!("accepted {vars:?}: {c:?}"),
        }
    }

    #[test]
    fn off_without_an_endpoint_or_when_disabled() {
        assert!(read(&[]).unwrap().is_none());
        assert!(read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "  ")]).unwrap().is_none());
        assert!(
            read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), ("OTEL_SDK_DISABLED", "true")]).unwrap().is_none()
        );
        assert!(
            read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), ("OTEL_TRACES_EXPORTER", "none")])
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn endpoints_follow_the_otlp_rules() {
        let c = read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")]).unwrap().unwrap();
        assert_eq!(c.traces_url, "http://c:4318/v1/traces");
        let c = read(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://t/x"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.traces_url, "https://t/x", "the per-signal endpoint is used as given");
        assert!(matches!(c.sampler, Sampler::ParentBased(_)), "the default sampler follows the caller's decision");
        assert!(!c.service_named);
    }

    #[test]
    fn bad_settings_name_their_variable_without_the_value() {
        let e = error_of(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector-secret:4318")]);
        assert_eq!(e.variable, "OTEL_EXPORTER_OTLP_ENDPOINT");
        assert!(!e.to_string().contains("secret"), "{e}");
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        assert_eq!(error_of(&[base, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).variable, "OTEL_EXPORTER_OTLP_PROTOCOL");
        assert_eq!(error_of(&[base, ("OTEL_TRACES_SAMPLER", "jaeger_remote")]).variable, "OTEL_TRACES_SAMPLER");
        let ratio = ("OTEL_TRACES_SAMPLER", "traceidratio");
        assert_eq!(error_of(&[base, ratio, ("OTEL_TRACES_SAMPLER_ARG", "1.5")]).variable, "OTEL_TRACES_SAMPLER_ARG");
        assert_eq!(error_of(&[base, ("OTEL_BSP_SCHEDULE_DELAY", "soon")]).variable, "OTEL_BSP_SCHEDULE_DELAY");
        assert_eq!(error_of(&[base, ("OTEL_BSP_MAX_QUEUE_SIZE", "0")]).variable, "OTEL_BSP_MAX_QUEUE_SIZE");
        assert_eq!(
            error_of(&[base, ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")]).variable,
            "OTEL_EXPORTER_OTLP_COMPRESSION"
        );
        let e = error_of(&[base, ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s3cret,broken")]);
        assert_eq!(e.variable, "OTEL_EXPORTER_OTLP_HEADERS");
        assert!(e.to_string().contains("entry 2") && !e.to_string().contains("s3cret"), "{e}");
        assert_eq!(error_of(&[base, ("OTEL_RESOURCE_ATTRIBUTES", "a=b,c")]).variable, "OTEL_RESOURCE_ATTRIBUTES");
    }

    #[test]
    fn headers_sampler_and_service_name() {
        let c = read(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%20b, x-tenant=t1"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-tenant=t2"),
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,service.name=cs"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.headers.get("api-key").map(String::as_str), Some("a b"));
        assert_eq!(c.headers.get("x-tenant").map(String::as_str), Some("t2"));
        assert!(matches!(c.sampler, Sampler::TraceIdRatioBased(r) if r == 0.25));
        assert!(c.service_named);
    }
}
