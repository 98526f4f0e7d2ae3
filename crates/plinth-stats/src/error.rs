//! The one error type of the crate.
//!
//! Statistical degeneracy (a zero baseline, zero variance, an empty arm) is
//! not an error: tests answer an uninformative result that says why, as
//! GrowthBook does, so an experiment page can show "not enough data". Errors
//! are for inputs that make no sense and for questions without an answer.

/// Why a statistics call or a JSON request could not be answered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatsError {
    /// A required field of a request is absent.
    #[error("missing field `{field}`")]
    MissingField { field: String },
    /// A field is present but its value is not acceptable.
    #[error("invalid field `{field}`: {reason}")]
    InvalidField { field: String, reason: String },
    /// The inputs are valid but the question has no answer, e.g. a minimum
    /// detectable effect that no effect size reaches with this many units.
    #[error("no answer: {0}")]
    Infeasible(String),
}

impl StatsError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        StatsError::InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn missing(field: impl Into<String>) -> Self {
        StatsError::MissingField {
            field: field.into(),
        }
    }
}

/// Checks that a probability-like parameter lies strictly between 0 and 1.
pub(crate) fn check_open_unit(field: &str, value: f64) -> Result<(), StatsError> {
    if value.is_finite() && value > 0.0 && value < 1.0 {
        Ok(())
    } else {
        Err(StatsError::invalid(
            field,
            format!("must be strictly between 0 and 1, got {value}"),
        ))
    }
}
