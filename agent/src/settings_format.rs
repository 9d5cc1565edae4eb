//! How settings are written, shared by every stage's settings type and by the rule packs:
//! range checks of numeric keys, run while a file is read, so that an out-of-range value is
//! reported at its line and column like a wrong type or an unknown key; durations whose keys
//! name their unit (`*_secs`, `*_ms`), read into [`Duration`]s; and YAML errors split into
//! their place and reason.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

/// Deserializes a whole number and accepts it only from `MIN` to `MAX` (inclusive); use as
/// `#[serde(deserialize_with = "settings_format::within::<_, _, MIN, MAX>")]`.
pub fn within<'de, D, T, const MIN: u64, const MAX: u64>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Copy + TryInto<u64> + std::fmt::Display,
{
    let value = T::deserialize(deserializer)?;
    match value.try_into() {
        Ok(number) if (MIN..=MAX).contains(&number) => Ok(value),
        _ => Err(D::Error::custom(format!(
            "{value} is out of range: expected {MIN} to {MAX}"
        ))),
    }
}

/// A duration written in whole seconds, from `MIN` to `MAX`.
pub fn secs_within<'de, D, const MIN: u64, const MAX: u64>(
    deserializer: D,
) -> Result<Duration, D::Error>
where
    D: Deserializer<'de>,
{
    within::<D, u64, MIN, MAX>(deserializer).map(Duration::from_secs)
}

/// A duration written in whole milliseconds, from `MIN` to `MAX`.
pub fn millis_within<'de, D, const MIN: u64, const MAX: u64>(
    deserializer: D,
) -> Result<Duration, D::Error>
where
    D: Deserializer<'de>,
{
    within::<D, u64, MIN, MAX>(deserializer).map(Duration::from_millis)
}

/// Writes a duration as whole seconds.
pub fn as_secs<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(duration.as_secs())
}

/// Writes a duration as whole milliseconds.
pub fn as_millis<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

/// Where a YAML file is wrong and why: 1-based line and column (0 when the parser gave none)
/// and the reason without the parser's own " at line L column C" suffix, so that callers can
/// put the location in front, as `file:line:column: reason`.
pub fn yaml_error(error: &serde_yaml_ng::Error) -> (usize, usize, String) {
    let (line, column) = error
        .location()
        .map(|at| (at.line(), at.column()))
        .unwrap_or((0, 0));
    let reason = error.to_string();
    let reason = reason
        .split(" at line ")
        .next()
        .unwrap_or(&reason)
        .to_owned();
    (line, column, reason)
}
