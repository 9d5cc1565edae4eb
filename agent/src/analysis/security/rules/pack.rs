//! Rule packs as written: the YAML files' shape, checked while parsing so that every error
//! carries its file, line and column.

use serde::Deserialize;

use super::{Lane, Matcher, References, RuleSeverity};

/// Rules one pack may hold; a pack is reviewed by people, so more is a mistake.
pub(super) const MAX_RULES: usize = 1_000;

/// One pack file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PackFile {
    /// The pack's name (`security_rule.ruleset.name`).
    pub name: String,
    /// The pack's version, as its authors number it.
    pub version: String,
    /// Stops every rule while true, whatever its lane.
    #[serde(default)]
    pub kill_switch: bool,
    /// Rules, new or overriding earlier packs' rules of the same id.
    #[serde(default)]
    pub rules: Vec<RuleEntry>,
}

/// One rule as a pack writes it. A rule new to the merged set needs every field; one that
/// overrides an earlier pack's rule of the same id may give only what it changes (e.g. just
/// `lane: off`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RuleEntry {
    pub id: RuleId,
    pub version: Option<u32>,
    pub title: Option<String>,
    pub severity: Option<RuleSeverity>,
    pub lane: Option<Lane>,
    pub category: Option<String>,
    pub references: Option<References>,
    #[serde(rename = "match", default, deserialize_with = "valid_matcher")]
    pub matcher: Option<Matcher>,
}

/// A matcher whose parameters are in range; checked while parsing, so that the error points
/// at it.
fn valid_matcher<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Matcher>, D::Error> {
    let matcher = Matcher::deserialize(deserializer)?;
    matcher.validate().map_err(serde::de::Error::custom)?;
    Ok(Some(matcher))
}

/// A rule id: lowercase letters, digits, `-`, `_` and `.`, at most 64 bytes, so it can name
/// metrics and files.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct RuleId(String);

impl RuleId {
    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RuleId {
    type Error = String;

    fn try_from(id: String) -> Result<Self, String> {
        let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c);
        if id.is_empty() || id.len() > 64 || !id.chars().all(allowed) {
            return Err(format!(
                "rule id `{id}`: use 1 to 64 lowercase letters, digits, `-`, `_` or `.`"
            ));
        }
        Ok(Self(id))
    }
}

impl std::fmt::Display for RuleId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
