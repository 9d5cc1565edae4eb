//! Range checks of numeric keys, run while the file is parsed, so that an out-of-range value
//! is reported at its line and column like a wrong type or an unknown key.

use serde::{Deserialize, Deserializer, de::Error as _};

/// Deserializes a whole number and accepts it only from `MIN` to `MAX` (inclusive); use as
/// `#[serde(deserialize_with = "ranges::within::<_, _, MIN, MAX>")]`.
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
