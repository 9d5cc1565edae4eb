//! Path templates (`/users/{id}`) and how concrete paths match them.

use std::cmp::Ordering;

/// One `/`-separated piece of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Segment {
    /// Text the path must repeat exactly.
    Literal(String),
    /// `{name}`: any one non-empty segment, the value of the path parameter `name`.
    Parameter(String),
    /// Text around a parameter (`{id}.json`): any one non-empty segment, with no value read.
    Mixed,
}

impl Segment {
    fn parse(text: &str) -> Self {
        let whole_parameter = text
            .strip_prefix('{')
            .and_then(|rest| rest.strip_suffix('}'))
            .filter(|name| !name.contains(['{', '}']));
        match whole_parameter {
            Some(name) => Self::Parameter(name.to_owned()),
            None if text.contains('{') => Self::Mixed,
            None => Self::Literal(text.to_owned()),
        }
    }

    fn matches(&self, concrete: &str) -> bool {
        match self {
            Self::Literal(literal) => literal == concrete,
            Self::Parameter(_) | Self::Mixed => !concrete.is_empty(),
        }
    }

    /// Literal segments are more specific than parameters: `/users/me` beats `/users/{id}`.
    fn specificity(&self) -> u8 {
        match self {
            Self::Literal(_) => 2,
            Self::Mixed => 1,
            Self::Parameter(_) => 0,
        }
    }
}

/// A parsed path template.
#[derive(Debug, Clone)]
pub(super) struct Template {
    segments: Vec<Segment>,
}

impl Template {
    pub(super) fn parse(template: &str) -> Self {
        Self {
            segments: segments(template).map(Segment::parse).collect(),
        }
    }

    pub(super) fn matches(&self, path: &str) -> bool {
        let mut concrete = segments(path);
        self.segments
            .iter()
            .all(|segment| concrete.next().is_some_and(|piece| segment.matches(piece)))
            && concrete.next().is_none()
    }

    /// Which of two matching templates is the more specific, segment by segment from the left.
    pub(super) fn specificity_cmp(&self, other: &Self) -> Ordering {
        self.segments
            .iter()
            .map(Segment::specificity)
            .cmp(other.segments.iter().map(Segment::specificity))
    }

    /// The raw (still percent-encoded) value of each path parameter in a matching `path`.
    pub(super) fn parameter_values<'p>(
        &self,
        path: &'p str,
    ) -> impl Iterator<Item = (&str, &'p str)> {
        self.segments
            .iter()
            .zip(segments(path))
            .filter_map(|(segment, value)| match segment {
                Segment::Parameter(name) => Some((name.as_str(), value)),
                Segment::Literal(_) | Segment::Mixed => None,
            })
    }
}

/// The segments of a path, insensitive to its leading and trailing slash.
fn segments(path: &str) -> impl Iterator<Item = &str> {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    trimmed.split('/').filter({
        let root = trimmed.is_empty();
        move |_| !root
    })
}
