//! Field rules shared by the resources, collected rather than failing fast
//! so one 422 names every problem of a body.

use chrono::{DateTime, NaiveDate, Utc};

use crate::http::{AppError, FieldError};

/// The problems found in one body.
#[derive(Debug, Default)]
pub struct Errors(Vec<FieldError>);

impl Errors {
    /// Records a problem; only the first one found for a field is kept, so
    /// a `null` title is not also reported as blank.
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        let field = field.into();
        if !self.0.iter().any(|e| e.field == field) {
            self.0.push(FieldError::new(field, message));
        }
    }

    /// `Ok` when nothing was found, else the 422.
    pub fn into_result(self) -> Result<(), AppError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(AppError::Validation(self.0))
        }
    }

    /// Sets a field that cannot be empty from a present input value.
    pub fn set<T>(&mut self, slot: &mut T, input: Option<Option<T>>, field: &str) {
        match input {
            Some(Some(value)) => *slot = value,
            Some(None) => self.add(field, "must not be null"),
            None => {}
        }
    }

    /// A required text of `min..=max` characters (not only whitespace).
    pub fn required_text(&mut self, field: &str, value: &str, max: usize) {
        if value.trim().is_empty() {
            self.add(field, "is required and must not be blank");
        } else {
            self.max_len(field, value, max);
        }
    }

    /// An optional text of at most `max` characters.
    pub fn optional_text(&mut self, field: &str, value: Option<&str>, max: usize) {
        if let Some(value) = value {
            self.max_len(field, value, max);
        }
    }

    fn max_len(&mut self, field: &str, value: &str, max: usize) {
        if value.chars().count() > max {
            self.add(field, format!("must be at most {max} characters"));
        }
        if value.contains('\0') {
            self.add(field, "must not contain NUL characters");
        }
    }

    pub fn non_negative(&mut self, field: &str, value: i64) {
        if value < 0 {
            self.add(field, "must be 0 or more");
        }
    }

    /// `later` is not before `earlier` when both are set.
    pub fn not_before(
        &mut self,
        field: &str,
        later: Option<NaiveDate>,
        earlier_field: &str,
        earlier: Option<NaiveDate>,
    ) {
        if let (Some(later), Some(earlier)) = (later, earlier) {
            if later < earlier {
                self.add(field, format!("must not be before {earlier_field}"));
            }
        }
    }

    /// An email address: one `@`, a non-empty local part, a dotted domain,
    /// no spaces, at most 254 characters. Deliverability is not our business.
    pub fn email(&mut self, field: &str, value: Option<&str>) {
        let Some(value) = value else { return };
        let valid = value.len() <= 254
            && !value.chars().any(|c| c.is_whitespace() || c.is_control())
            && match value.split_once('@') {
                Some((local, domain)) => {
                    !local.is_empty()
                        && !domain.contains('@')
                        && domain.contains('.')
                        && !domain.starts_with('.')
                        && !domain.ends_with('.')
                        && !domain.contains("..")
                }
                None => false,
            };
        if !valid {
            self.add(field, "is not a valid email address");
        }
    }

    /// A timestamp within years 1..9999 is what both databases store and
    /// sort correctly; anything else is refused.
    pub fn timestamp(&mut self, field: &str, value: Option<DateTime<Utc>>) {
        use chrono::Datelike;
        if value.is_some_and(|t| !(1..=9999).contains(&t.year())) {
            self.add(field, "must be between years 1 and 9999");
        }
    }

    /// Like [`Errors::timestamp`], for dates.
    pub fn date(&mut self, field: &str, value: Option<NaiveDate>) {
        use chrono::Datelike;
        if value.is_some_and(|d| !(1..=9999).contains(&d.year())) {
            self.add(field, "must be between years 1 and 9999");
        }
    }
}

/// The lines of an invoice or order, checked, and their total with checked
/// arithmetic (an overflow is the client's 422, never a wrapped amount).
pub fn lines_total(lines: &[strata_db::model::Line], errors: &mut Errors) -> i64 {
    if lines.len() > 200 {
        errors.add("lines", "must have at most 200 lines");
    }
    let mut total: Option<i64> = Some(0);
    for (i, line) in lines.iter().enumerate() {
        let field = |name: &str| format!("lines[{i}].{name}");
        if line.description.trim().is_empty() {
            errors.add(field("description"), "is required and must not be blank");
        } else if line.description.chars().count() > 500 {
            errors.add(field("description"), "must be at most 500 characters");
        }
        if line.quantity < 1 {
            errors.add(field("quantity"), "must be 1 or more");
        }
        if line.unit_price_cents < 0 {
            errors.add(field("unit_price_cents"), "must be 0 or more");
        }
        total = total.and_then(|t| {
            line.quantity
                .checked_mul(line.unit_price_cents)
                .and_then(|l| t.checked_add(l))
        });
    }
    total.unwrap_or_else(|| {
        errors.add(
            "lines",
            "the total is larger than the largest amount supported",
        );
        0
    })
}
