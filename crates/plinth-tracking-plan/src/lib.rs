//! Tracking plans: the events a product promises to send, and the check of
//! each captured event against them.
//!
//! A plan is a YAML file (`<data>/tracking-plan.yml` unless `plinth serve
//! --tracking-plan` names another):
//!
//! ```yaml
//! mode: record              # record: store and count violations; enforce: quarantine them
//! unplanned_events: allow   # allow, or violation: an event the plan does not name violates it
//! events:
//!   checkout completed:
//!     description: A paid checkout went through.
//!     owner: payments
//!     mode: enforce         # overrides the plan's mode for this event
//!     additional_properties: true
//!     properties:
//!       plan:   { type: string, required: true, enum: [free, pro, team] }
//!       amount: { type: number, required: true, minimum: 0 }
//!       coupon: { type: [string, "null"] }
//! ```
//!
//! [`TrackingPlan::check`] answers, for one event name and its properties,
//! the violations found and what the plan's mode says to do with them. SDK
//! properties (names starting with `$`) are never "unexpected", and events
//! whose names start with `$` (`$pageview`, `$identify`, ...) are never
//! "unplanned"; a plan may still describe either.
//!
//! This crate is pure: it reads YAML text and JSON values, and never touches
//! the log, the store or HTTP. Capture and quarantine replay apply it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

/// The property under which an event stored in `record` mode carries its
/// violations, as a JSON array of messages. Clients cannot set it: a check
/// always replaces whatever the event brought.
pub const VIOLATIONS_PROPERTY: &str = "$plan_violations";

/// The prefix of the quarantine reason of an event an `enforce` plan refused.
pub const QUARANTINE_REASON_PREFIX: &str = "tracking plan: ";

/// What a plan does with an event that violates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Store the event, with its violations in [`VIOLATIONS_PROPERTY`].
    #[default]
    Record,
    /// Send the event to quarantine, its violations as the reason.
    Enforce,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Record => "record",
            Mode::Enforce => "enforce",
        })
    }
}

/// Whether events the plan does not name are violations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Unplanned {
    #[default]
    Allow,
    Violation,
}

/// A JSON type a property may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JsonType {
    String,
    Number,
    Integer,
    Boolean,
    Object,
    Array,
    Null,
}

impl JsonType {
    fn admits(self, value: &Value) -> bool {
        match (self, value) {
            (JsonType::String, Value::String(_))
            | (JsonType::Number, Value::Number(_))
            | (JsonType::Boolean, Value::Bool(_))
            | (JsonType::Object, Value::Object(_))
            | (JsonType::Array, Value::Array(_))
            | (JsonType::Null, Value::Null) => true,
            (JsonType::Integer, Value::Number(n)) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            _ => false,
        }
    }

    fn name(self) -> &'static str {
        match self {
            JsonType::String => "string",
            JsonType::Number => "number",
            JsonType::Integer => "integer",
            JsonType::Boolean => "boolean",
            JsonType::Object => "object",
            JsonType::Array => "array",
            JsonType::Null => "null",
        }
    }
}

/// The type of a JSON value, in the plan's words.
fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// One type or a list of them: `type: string` or `type: [string, "null"]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
enum Types {
    One(JsonType),
    Many(Vec<JsonType>),
}

impl Types {
    fn as_slice(&self) -> &[JsonType] {
        match self {
            Types::One(one) => std::slice::from_ref(one),
            Types::Many(many) => many,
        }
    }
}

/// What the plan says of one property.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PropertySchema {
    #[serde(rename = "type")]
    types: Option<Types>,
    #[serde(default)]
    pub required: bool,
    #[serde(rename = "enum")]
    allowed: Option<Vec<Value>>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    pub description: Option<String>,
}

/// What the plan says of one event.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EventSchema {
    pub description: Option<String>,
    pub owner: Option<String>,
    /// Overrides the plan's mode for this event.
    mode: Option<Mode>,
    /// Whether properties the plan does not list are allowed.
    #[serde(default = "allowed")]
    additional_properties: bool,
    #[serde(default)]
    pub properties: BTreeMap<String, PropertySchema>,
}

fn allowed() -> bool {
    true
}

/// A loaded tracking plan.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TrackingPlan {
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    unplanned_events: Unplanned,
    #[serde(default)]
    events: BTreeMap<String, EventSchema>,
}

/// A plan that could not be read, with the file and line when known.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PlanError {
    pub path: String,
    pub message: String,
}

/// An event that violates the plan: what is wrong, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub mode: Mode,
    /// One message per violation, in property order.
    pub violations: Vec<String>,
}

impl Verdict {
    /// The quarantine reason of an event an `enforce` plan refused.
    pub fn quarantine_reason(&self) -> String {
        format!("{QUARANTINE_REASON_PREFIX}{}", self.violations.join("; "))
    }
}

impl TrackingPlan {
    /// Reads a plan from YAML; `path` names the file in errors.
    pub fn from_yaml(text: &str, path: &Path) -> Result<TrackingPlan, PlanError> {
        let error = |message: String| PlanError {
            path: path.display().to_string(),
            message,
        };
        let plan: TrackingPlan = serde_norway::from_str(text).map_err(|e| error(e.to_string()))?;
        plan.validate().map_err(error)?;
        Ok(plan)
    }

    /// Reads the plan file at `path`.
    pub fn load(path: &Path) -> Result<TrackingPlan, PlanError> {
        let text = std::fs::read_to_string(path).map_err(|e| PlanError {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        TrackingPlan::from_yaml(&text, path)
    }

    /// Rejects plans that contradict themselves, so that a mistake in the
    /// plan is not reported as a violation of every event.
    fn validate(&self) -> Result<(), String> {
        for (event, schema) in &self.events {
            for (name, property) in &schema.properties {
                let place = format!("events.{event}.properties.{name}");
                if let (Some(types), Some(allowed)) = (&property.types, &property.allowed) {
                    for value in allowed {
                        if !types.as_slice().iter().any(|t| t.admits(value)) {
                            return Err(format!(
                                "{place}: the allowed value {value} is not of the property's type"
                            ));
                        }
                    }
                }
                if let (Some(min), Some(max)) = (property.minimum, property.maximum)
                    && min > max
                {
                    return Err(format!("{place}: minimum {min} is above maximum {max}"));
                }
            }
        }
        Ok(())
    }

    /// The events the plan describes, by name.
    pub fn events(&self) -> &BTreeMap<String, EventSchema> {
        &self.events
    }

    /// The mode that applies to `event`.
    pub fn mode_of(&self, event: &str) -> Mode {
        self.events
            .get(event)
            .and_then(|schema| schema.mode)
            .unwrap_or(self.mode)
    }

    /// Checks one event; `None` when it satisfies the plan.
    pub fn check(&self, event: &str, properties: &Map<String, Value>) -> Option<Verdict> {
        let mut violations = Vec::new();
        match self.events.get(event) {
            Some(schema) => schema.check(properties, &mut violations),
            None if self.unplanned_events == Unplanned::Violation && !event.starts_with('$') => {
                violations.push(format!("event `{event}` is not in the tracking plan"));
            }
            None => {}
        }
        (!violations.is_empty()).then(|| Verdict {
            mode: self.mode_of(event),
            violations,
        })
    }

    /// Checks an event and marks it for storage: removes any
    /// [`VIOLATIONS_PROPERTY`] the client sent and, when the plan is broken
    /// in `record` mode, sets it to the violations. Returns the verdict; in
    /// `enforce` mode the caller quarantines the event.
    pub fn check_and_mark(
        &self,
        event: &str,
        properties: &mut Map<String, Value>,
    ) -> Option<Verdict> {
        properties.remove(VIOLATIONS_PROPERTY);
        let verdict = self.check(event, properties)?;
        let messages = verdict.violations.iter().cloned().map(Value::String);
        properties.insert(VIOLATIONS_PROPERTY.to_string(), messages.collect());
        Some(verdict)
    }
}

impl EventSchema {
    fn check(&self, properties: &Map<String, Value>, violations: &mut Vec<String>) {
        for (name, schema) in &self.properties {
            match properties.get(name) {
                None if schema.required => {
                    violations.push(format!("missing required property `{name}`"));
                }
                None => {}
                Some(value) => schema.check(name, value, violations),
            }
        }
        if !self.additional_properties {
            for name in properties.keys() {
                if !name.starts_with('$') && !self.properties.contains_key(name) {
                    violations.push(format!(
                        "unexpected property `{name}` (the plan lists every property of this event)"
                    ));
                }
            }
        }
    }
}

impl PropertySchema {
    fn check(&self, name: &str, value: &Value, violations: &mut Vec<String>) {
        if let Some(types) = &self.types {
            let types = types.as_slice();
            if !types.iter().any(|t| t.admits(value)) {
                let expected: Vec<&str> = types.iter().map(|t| t.name()).collect();
                violations.push(format!(
                    "property `{name}` is {} {value}, expected {}",
                    type_of(value),
                    expected.join(" or ")
                ));
                return;
            }
        }
        if let Some(allowed) = &self.allowed
            && !allowed.contains(value)
        {
            let listed: Vec<String> = allowed.iter().map(Value::to_string).collect();
            violations.push(format!(
                "property `{name}` is {value}, not one of {}",
                listed.join(", ")
            ));
        }
        if let Some(number) = value.as_f64() {
            if let Some(minimum) = self.minimum
                && number < minimum
            {
                violations.push(format!(
                    "property `{name}` is {value}, below the minimum {minimum}"
                ));
            }
            if let Some(maximum) = self.maximum
                && number > maximum
            {
                violations.push(format!(
                    "property `{name}` is {value}, above the maximum {maximum}"
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const PLAN: &str = r#"
mode: record
unplanned_events: violation
events:
  checkout completed:
    owner: payments
    mode: enforce
    properties:
      plan: { type: string, required: true, enum: [free, pro, team] }
      amount: { type: number, required: true, minimum: 0 }
      seats: { type: integer }
      coupon: { type: [string, "null"] }
  signed up:
    additional_properties: false
    properties:
      source: { type: string }
"#;

    fn plan() -> TrackingPlan {
        TrackingPlan::from_yaml(PLAN, Path::new("tracking-plan.yml")).unwrap()
    }

    fn props(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("test properties are objects"),
        }
    }

    #[test]
    fn a_conforming_event_passes() {
        let properties = props(json!({"plan": "pro", "amount": 12.5, "seats": 3, "coupon": null}));
        assert_eq!(plan().check("checkout completed", &properties), None);
    }

    #[test]
    fn each_kind_of_violation_is_named() {
        let properties = props(json!({"plan": "gold", "seats": 2.5}));
        let verdict = plan().check("checkout completed", &properties).unwrap();
        assert_eq!(verdict.mode, Mode::Enforce);
        assert_eq!(
            verdict.violations,
            vec![
                "missing required property `amount`".to_string(),
                "property `plan` is \"gold\", not one of \"free\", \"pro\", \"team\"".into(),
                "property `seats` is number 2.5, expected integer".into(),
            ]
        );
        let below = props(json!({"plan": "pro", "amount": -1}));
        assert_eq!(
            plan()
                .check("checkout completed", &below)
                .unwrap()
                .violations,
            vec!["property `amount` is -1, below the minimum 0".to_string()]
        );
    }

    #[test]
    fn unplanned_and_unexpected_follow_the_plan() {
        let plan = plan();
        let verdict = plan.check("clicked button", &Map::new()).unwrap();
        assert_eq!(verdict.mode, Mode::Record);
        assert_eq!(
            verdict.violations,
            vec!["event `clicked button` is not in the tracking plan".to_string()]
        );
        assert_eq!(plan.check("$pageview", &Map::new()), None);
        let extra = props(json!({"source": "ads", "$browser": "Chrome", "referrer": "x"}));
        let verdict = plan.check("signed up", &extra).unwrap();
        assert_eq!(verdict.violations.len(), 1);
        assert!(verdict.violations[0].contains("`referrer`"));
    }

    #[test]
    fn marking_replaces_what_the_client_sent() {
        let plan = plan();
        let mut forged = props(json!({"source": "ads", VIOLATIONS_PROPERTY: ["made up"]}));
        assert_eq!(plan.check_and_mark("signed up", &mut forged), None);
        assert!(!forged.contains_key(VIOLATIONS_PROPERTY));
        let mut bad = props(json!({"source": 7}));
        let verdict = plan.check_and_mark("signed up", &mut bad).unwrap();
        assert_eq!(bad[VIOLATIONS_PROPERTY], json!(verdict.violations));
    }

    #[test]
    fn plan_mistakes_are_errors_with_the_place() {
        let path = Path::new("plan.yml");
        let unknown = TrackingPlan::from_yaml("mode: record\nevnets: {}\n", path).unwrap_err();
        assert!(unknown.to_string().starts_with("plan.yml: "), "{unknown}");
        assert!(unknown.to_string().contains("evnets"), "{unknown}");
        let bad_mode = TrackingPlan::from_yaml("mode: block\n", path).unwrap_err();
        assert!(bad_mode.to_string().contains("line 1"), "{bad_mode}");
        let contradiction = "events:\n  e:\n    properties:\n      p: {type: number, enum: [a]}\n";
        let error = TrackingPlan::from_yaml(contradiction, path).unwrap_err();
        assert!(
            error.to_string().contains("events.e.properties.p"),
            "{error}"
        );
    }

    proptest! {
        /// Without `additional_properties: false`, a property the plan does
        /// not mention never changes the verdict.
        #[test]
        fn unlisted_properties_do_not_matter(key in "[a-z]{1,8}", value in any::<i64>()) {
            prop_assume!(!["plan", "amount", "seats", "coupon"].contains(&key.as_str()));
            let plan = plan();
            let base = props(json!({"plan": "pro", "amount": 1}));
            let mut extended = base.clone();
            extended.insert(key, json!(value));
            prop_assert_eq!(
                plan.check("checkout completed", &base),
                plan.check("checkout completed", &extended)
            );
        }
    }
}
