//! TLS client fingerprints: a served request whose client's ClientHello has a JA4 fingerprint
//! a pack lists (a scanner, a bot framework, a known-bad client), whatever it then asks for.

use std::sync::Arc;

use super::{
    family::{CallContext, Claimed, DetectorFamily, claim},
    finding::Finding,
    rules::{Matcher, Rule},
};

/// The `tls_fingerprint` rules.
#[derive(Debug, Default)]
pub(super) struct TlsFingerprintFamily {
    /// Each rule with the JA4 fingerprints it lists.
    rules: Vec<Claimed<Vec<String>>>,
}

impl DetectorFamily for TlsFingerprintFamily {
    fn adopt(&mut self, rules: &[Arc<Rule>]) -> bool {
        self.rules = claim(rules, |matcher| match matcher {
            Matcher::TlsFingerprint(params) => Some(params.ja4.clone()),
            _ => None,
        });
        !self.rules.is_empty()
    }

    fn judge(&mut self, context: &CallContext<'_>, findings: &mut Vec<Finding>) {
        let Some(served) = context.served() else {
            return;
        };
        let Some(ja4) = context.call.call.connection.tls_client_ja4.as_deref() else {
            return;
        };
        for rule in &self.rules {
            if rule
                .check
                .iter()
                .any(|listed| listed.eq_ignore_ascii_case(ja4))
            {
                findings.push(rule.finding(
                    served.subject(),
                    "tls:client_hello".to_owned(),
                    format!("JA4 {ja4} is listed"),
                ));
            }
        }
    }
}
