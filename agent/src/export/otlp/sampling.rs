//! Which calls' spans are exported: the OpenTelemetry sampler the standard variables name
//! (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`, as `export.otlp.sampling`), decided by the
//! SDK's own samplers, and keep-always rules for the spans an operator must not miss whatever
//! the ratio: failed calls, slow ones, and calls that raised an event (a security finding,
//! sensitive data, the first call of an endpoint new to the inventory).
//!
//! Only span export is sampled: every call is decoded, measured, inventoried and checked
//! before this decision, so metrics, the inventory and findings are the same at any ratio.

use std::time::Duration;

use opentelemetry::{
    Context,
    trace::{SpanContext, SpanKind, TraceContextExt, TraceId},
};
use opentelemetry_sdk::trace::{Sampler, SamplingDecision, ShouldSample};
use serde::{Deserialize, Deserializer, Serialize};

use crate::settings_format;

/// A sampler as the OpenTelemetry specification names it in `OTEL_TRACES_SAMPLER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum SamplerName {
    /// Every span.
    #[serde(rename = "always_on")]
    AlwaysOn,
    /// No span (but those the keep-always rules keep).
    #[serde(rename = "always_off")]
    AlwaysOff,
    /// A share of traces, `sampler_arg`, chosen by trace id: every agent on the path of a
    /// trace makes the same choice.
    #[serde(rename = "traceidratio")]
    TraceIdRatio,
    /// The request's `traceparent` decides when it has one; every span otherwise (the
    /// specification's default).
    #[serde(rename = "parentbased_always_on")]
    ParentBasedAlwaysOn,
    /// The request's `traceparent` decides when it has one; no span otherwise.
    #[serde(rename = "parentbased_always_off")]
    ParentBasedAlwaysOff,
    /// The request's `traceparent` decides when it has one; `traceidratio` otherwise.
    #[serde(rename = "parentbased_traceidratio")]
    ParentBasedTraceIdRatio,
}

/// A share between 0 and 1 (never NaN, so it compares as a whole number would).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Ratio(f64);

impl Eq for Ratio {}

impl Ratio {
    /// The share, 0 to 1.
    pub fn get(self) -> f64 {
        self.0
    }
}

/// `export.otlp.sampling:` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingSettings {
    /// The sampler (`OTEL_TRACES_SAMPLER`).
    pub sampler: SamplerName,
    /// The share of traces the `traceidratio` samplers keep, 0 to 1 (`OTEL_TRACES_SAMPLER_ARG`).
    #[serde(deserialize_with = "ratio")]
    pub sampler_arg: Ratio,
    /// Keep the span of every failed call (its protocol's error: 5xx, a gRPC error status, a
    /// JSON-RPC error, no answer).
    pub keep_errors: bool,
    /// Keep the span of every call that raised an event: a security finding, sensitive data,
    /// a schema violation, the first call of an endpoint, model or tool new to the inventory.
    pub keep_with_events: bool,
    /// Keep the span of every call that lasted this long or longer, in milliseconds; 0 keeps
    /// none for its duration.
    #[serde(
        rename = "keep_slower_than_ms",
        deserialize_with = "settings_format::millis_within::<_, 0, 3_600_000>",
        serialize_with = "settings_format::as_millis"
    )]
    pub keep_slower_than: Duration,
}

impl Default for SamplingSettings {
    fn default() -> Self {
        Self {
            sampler: SamplerName::ParentBasedAlwaysOn,
            sampler_arg: Ratio(1.0),
            keep_errors: true,
            keep_with_events: true,
            keep_slower_than: Duration::from_secs(1),
        }
    }
}

/// A share between 0 and 1, from a number or from a string (the environment's).
fn ratio<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Ratio, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(f64),
        Text(String),
    }
    let value = match Raw::deserialize(deserializer)? {
        Raw::Number(value) => value,
        Raw::Text(text) => text.trim().parse().map_err(|_| {
            serde::de::Error::custom(format!("`{text}` is not a number between 0 and 1"))
        })?,
    };
    if (0.0..=1.0).contains(&value) {
        Ok(Ratio(value))
    } else {
        Err(serde::de::Error::custom(format!(
            "{value} is not between 0 and 1"
        )))
    }
}

/// What the sampler looks at in a call.
#[derive(Debug, Clone, Copy)]
pub struct CallTraits<'a> {
    /// The request's trace context, when it carried a valid one.
    pub parent: &'a SpanContext,
    /// The span's trace.
    pub trace_id: TraceId,
    /// The call failed by its protocol's rules.
    pub failed: bool,
    /// The call raised at least one event.
    pub with_events: bool,
    /// How long it lasted.
    pub duration: Duration,
}

/// Decides, per call, whether its span is exported.
#[derive(Debug, Clone)]
pub struct SpanSampler {
    sampler: Sampler,
    /// The sampler keeps every span: nothing to ask it.
    keeps_all: bool,
    settings: SamplingSettings,
}

impl SpanSampler {
    /// The sampler `settings` describe.
    pub fn new(settings: &SamplingSettings) -> Self {
        let ratio = Sampler::TraceIdRatioBased(settings.sampler_arg.get());
        let parent_based = |root| Sampler::ParentBased(Box::new(root));
        let sampler = match settings.sampler {
            SamplerName::AlwaysOn => Sampler::AlwaysOn,
            SamplerName::AlwaysOff => Sampler::AlwaysOff,
            SamplerName::TraceIdRatio => ratio,
            SamplerName::ParentBasedAlwaysOn => parent_based(Sampler::AlwaysOn),
            SamplerName::ParentBasedAlwaysOff => parent_based(Sampler::AlwaysOff),
            SamplerName::ParentBasedTraceIdRatio => parent_based(ratio),
        };
        Self {
            sampler,
            keeps_all: settings.sampler == SamplerName::AlwaysOn,
            settings: *settings,
        }
    }

    /// Whether the span of the call with these `traits` is exported.
    pub fn keeps(&self, traits: &CallTraits<'_>) -> bool {
        let settings = &self.settings;
        if self.keeps_all
            || (settings.keep_errors && traits.failed)
            || (settings.keep_with_events && traits.with_events)
            || (!settings.keep_slower_than.is_zero()
                && traits.duration >= settings.keep_slower_than)
        {
            return true;
        }
        let parent = traits
            .parent
            .is_valid()
            .then(|| Context::new().with_remote_span_context(traits.parent.clone()));
        let result = self.sampler.should_sample(
            parent.as_ref(),
            traits.trace_id,
            "",
            &SpanKind::Server,
            &[],
            &[],
        );
        matches!(result.decision, SamplingDecision::RecordAndSample)
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanId, TraceFlags, TraceState};

    use super::*;

    /// A trace id whose ratio draw (its low 63 bits, as the SDK reads them) is `draw` of 1.
    fn trace_with_draw(draw: f64) -> TraceId {
        let low = (draw * (1u64 << 63) as f64) as u64;
        TraceId::from_bytes(
            ((0x0af7_6519_16cd_43dd_u128 << 64) | u128::from(low << 1)).to_be_bytes(),
        )
    }

    fn remote_parent(sampled: bool) -> SpanContext {
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        SpanContext::new(
            trace_with_draw(0.5),
            SpanId::from_bytes([1, 2, 3, 4, 5, 6, 7, 8]),
            flags,
            true,
            TraceState::default(),
        )
    }

    fn plain_call(parent: &SpanContext, trace_id: TraceId) -> CallTraits<'_> {
        CallTraits {
            parent,
            trace_id,
            failed: false,
            with_events: false,
            duration: Duration::from_millis(3),
        }
    }

    fn sampler(sampler: SamplerName, sampler_arg: f64) -> SpanSampler {
        SpanSampler::new(&SamplingSettings {
            sampler,
            sampler_arg: Ratio(sampler_arg),
            ..SamplingSettings::default()
        })
    }

    #[test]
    fn the_default_keeps_every_root_span_and_follows_a_parent() {
        let sampler = SpanSampler::new(&SamplingSettings::default());
        let none = SpanContext::empty_context();
        assert!(sampler.keeps(&plain_call(&none, trace_with_draw(0.99))));
        let sampled = remote_parent(true);
        assert!(sampler.keeps(&plain_call(&sampled, sampled.trace_id())));
        let unsampled = remote_parent(false);
        assert!(!sampler.keeps(&plain_call(&unsampled, unsampled.trace_id())));
    }

    #[test]
    fn a_ratio_keeps_the_traces_whose_id_falls_under_it() {
        let sampler = sampler(SamplerName::TraceIdRatio, 0.1);
        let none = SpanContext::empty_context();
        assert!(sampler.keeps(&plain_call(&none, trace_with_draw(0.05))));
        assert!(!sampler.keeps(&plain_call(&none, trace_with_draw(0.15))));
        // Not parent-based: an unsampled parent does not matter.
        let unsampled = remote_parent(false);
        assert!(sampler.keeps(&plain_call(&unsampled, trace_with_draw(0.05))));
    }

    #[test]
    fn parent_based_ratio_follows_the_parent_and_samples_roots() {
        let sampler = sampler(SamplerName::ParentBasedTraceIdRatio, 0.1);
        let sampled = remote_parent(true);
        assert!(sampler.keeps(&plain_call(&sampled, trace_with_draw(0.9))));
        let none = SpanContext::empty_context();
        assert!(!sampler.keeps(&plain_call(&none, trace_with_draw(0.9))));
        assert!(sampler.keeps(&plain_call(&none, trace_with_draw(0.01))));
    }

    #[test]
    fn errors_events_and_slow_calls_are_kept_when_nothing_else_is() {
        let sampler = sampler(SamplerName::AlwaysOff, 1.0);
        let none = SpanContext::empty_context();
        let call = plain_call(&none, trace_with_draw(0.5));
        assert!(!sampler.keeps(&call));
        assert!(sampler.keeps(&CallTraits {
            failed: true,
            ..call
        }));
        assert!(sampler.keeps(&CallTraits {
            with_events: true,
            ..call
        }));
        assert!(sampler.keeps(&CallTraits {
            duration: Duration::from_secs(2),
            ..call
        }));
        let strict = SpanSampler::new(&SamplingSettings {
            sampler: SamplerName::AlwaysOff,
            keep_errors: false,
            keep_with_events: false,
            keep_slower_than: Duration::ZERO,
            ..SamplingSettings::default()
        });
        assert!(!strict.keeps(&CallTraits {
            failed: true,
            with_events: true,
            duration: Duration::from_secs(2),
            ..call
        }));
    }
}
