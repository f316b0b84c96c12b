//! A plugin's input, as policies see it.
//!
//! A plugin that declares a JSON Schema for its input gets its own action,
//! `AgentRuntime::Action::"<plugin>"`, a member of `Action::"dispatch"`,
//! whose context carries `input`: the part of the request's input that
//! Cedar can type. Its type is generated from the schema, so strict
//! validation rejects a policy that names a field the plugin does not have.
//!
//! | JSON Schema | Cedar |
//! |---|---|
//! | `"type": "string"` | `String` |
//! | `"type": "integer"` | `Long` |
//! | `"type": "boolean"` | `Bool` |
//! | `"type": "array"` with `items` of a type here | `Set<...>` |
//! | `"type": "object"` with `properties` | a record; a property listed in `required` is required |
//! | anything else (`number`, `null`, several types, no type, ...) | left out: policies cannot see it |

use std::collections::BTreeMap;
use std::fmt::Write as _;

use cedar_policy::RestrictedExpression;
use serde_json::Value;

/// Nesting deeper than this is left out (schemas and inputs alike).
const MAX_DEPTH: usize = 16;

/// The Cedar type of (a part of) a plugin's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputType {
    String,
    Long,
    Bool,
    Set(Box<InputType>),
    Record(BTreeMap<String, Field>),
}

/// One attribute of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub ty: InputType,
    pub required: bool,
}

/// Why an input does not fit its type: where (a JSON pointer) and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", if path.is_empty() { "/" } else { path })]
pub struct InputMismatch {
    pub path: String,
    pub message: String,
}

impl InputType {
    /// The type policies see for input declared by `schema`: a record (the
    /// schema must describe an object), holding the properties Cedar can type.
    pub fn of_schema(schema: &Value) -> Result<Self, String> {
        match Self::convert(schema, 0) {
            Some(record @ Self::Record(_)) => Ok(record),
            _ => Err(
                "the input schema must have \"type\": \"object\" (policies see the input as a record)"
                    .to_owned(),
            ),
        }
    }

    fn convert(schema: &Value, depth: usize) -> Option<Self> {
        if depth > MAX_DEPTH {
            return None;
        }
        match schema.get("type")?.as_str()? {
            "string" => Some(Self::String),
            "integer" => Some(Self::Long),
            "boolean" => Some(Self::Bool),
            "array" => Some(Self::Set(Box::new(Self::convert(
                schema.get("items")?,
                depth + 1,
            )?))),
            "object" => {
                let required: Vec<&str> = schema
                    .get("required")
                    .and_then(Value::as_array)
                    .map(|names| names.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let properties = schema
                    .get("properties")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten();
                let fields = properties
                    .filter(|(name, _)| is_attribute_name(name))
                    .filter_map(|(name, property)| {
                        let ty = Self::convert(property, depth + 1)?;
                        let required = required.contains(&name.as_str());
                        Some((name.clone(), Field { ty, required }))
                    })
                    .collect();
                Some(Self::Record(fields))
            }
            _ => None,
        }
    }

    /// The type in Cedar's schema syntax.
    pub fn cedar(&self) -> String {
        match self {
            Self::String => "String".to_owned(),
            Self::Long => "Long".to_owned(),
            Self::Bool => "Bool".to_owned(),
            Self::Set(element) => format!("Set<{}>", element.cedar()),
            Self::Record(fields) => {
                let mut text = String::from("{");
                for (i, (name, field)) in fields.iter().enumerate() {
                    let separator = if i == 0 { " " } else { ", " };
                    let optional = if field.required { "" } else { "?" };
                    let _ = write!(
                        text,
                        "{separator}\"{name}\"{optional}: {}",
                        field.ty.cedar()
                    );
                }
                text.push_str(if fields.is_empty() { "}" } else { " }" });
                text
            }
        }
    }

    /// The part of `input` this type covers (fields it leaves out are
    /// dropped), or where `input` does not fit it.
    pub fn project(&self, input: &Value) -> Result<Value, InputMismatch> {
        self.project_at(input, &mut String::new())
    }

    fn project_at(&self, input: &Value, path: &mut String) -> Result<Value, InputMismatch> {
        let mismatch = |path: &str, message: String| InputMismatch {
            path: path.to_owned(),
            message,
        };
        match (self, input) {
            (Self::String, Value::String(_)) | (Self::Bool, Value::Bool(_)) => Ok(input.clone()),
            (Self::Long, Value::Number(number)) => number
                .as_i64()
                .or_else(|| {
                    // 5.0 is an integer to JSON Schema.
                    let float = number.as_f64()?;
                    (float.fract() == 0.0 && float.abs() < 9.0e15).then_some(float as i64)
                })
                .map(Value::from)
                .ok_or_else(|| {
                    mismatch(
                        path,
                        format!("{number} is not an integer policies can compare (64-bit)"),
                    )
                }),
            (Self::Set(element), Value::Array(items)) => {
                let mut projected = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let length = path.len();
                    let _ = write!(path, "/{i}");
                    projected.push(element.project_at(item, path)?);
                    path.truncate(length);
                }
                Ok(Value::Array(projected))
            }
            (Self::Record(fields), Value::Object(object)) => {
                let mut projected = serde_json::Map::new();
                for (name, field) in fields {
                    let length = path.len();
                    path.push('/');
                    path.push_str(&name.replace('~', "~0").replace('/', "~1"));
                    match object.get(name) {
                        Some(value) => {
                            projected.insert(name.clone(), field.ty.project_at(value, path)?);
                        }
                        None if field.required => {
                            return Err(mismatch(path, "is required".to_owned()));
                        }
                        None => {}
                    }
                    path.truncate(length);
                }
                Ok(Value::Object(projected))
            }
            (expected, found) => Err(mismatch(
                path,
                format!("expected {}, found {}", expected.describe(), kind(found)),
            )),
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Self::String => "a string",
            Self::Long => "an integer",
            Self::Bool => "a boolean",
            Self::Set(_) => "an array",
            Self::Record(_) => "an object",
        }
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A property name a Cedar schema can quote as it is: printable ASCII, no
/// quote or backslash. Others are left out.
fn is_attribute_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

/// A Cedar schema fragment declaring the action of each plugin in
/// `plugins` (name -> input type), to be read after [`crate::SCHEMA`]. A
/// plugin named `dispatch` gets none: that name is the group's.
pub fn plugin_actions_fragment(plugins: &BTreeMap<String, InputType>) -> String {
    let mut text = String::from(
        "// Generated from the input schemas of the registry's plugins: one action\n\
         // per plugin, in `dispatch`, its context carrying the typed input.\n\
         namespace AgentRuntime {\n",
    );
    for (plugin, input) in plugins.iter().filter(|(name, _)| *name != "dispatch") {
        let _ = writeln!(
            text,
            "  action \"{plugin}\" in [Action::\"dispatch\"] appliesTo {{\n    \
             principal: [User, Service],\n    resource: Plugin,\n    \
             context: {{ intent: String, source_ip: ipaddr, time: datetime, input: {} }}\n  }};",
            input.cedar()
        );
    }
    text.push_str("}\n");
    text
}

/// A projected input as a Cedar value.
pub(crate) fn to_cedar(value: &Value) -> Result<RestrictedExpression, String> {
    Ok(match value {
        Value::String(s) => RestrictedExpression::new_string(s.clone()),
        Value::Bool(b) => RestrictedExpression::new_bool(*b),
        Value::Number(n) => RestrictedExpression::new_long(
            n.as_i64()
                .ok_or_else(|| format!("input: {n} is not a 64-bit integer"))?,
        ),
        Value::Array(items) => RestrictedExpression::new_set(
            items.iter().map(to_cedar).collect::<Result<Vec<_>, _>>()?,
        ),
        Value::Object(fields) => RestrictedExpression::new_record(
            fields
                .iter()
                .map(|(name, value)| Ok((name.clone(), to_cedar(value)?)))
                .collect::<Result<Vec<_>, String>>()?,
        )
        .map_err(|e| e.to_string())?,
        Value::Null => return Err("input: null has no Cedar value".to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn expense() -> Value {
        json!({
            "type": "object",
            "required": ["amount", "currency"],
            "properties": {
                "amount": {"type": "integer", "minimum": 0},
                "currency": {"type": "string"},
                "urgent": {"type": "boolean"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "ratio": {"type": "number"},
                "payee": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}
            }
        })
    }

    #[test]
    fn a_schema_becomes_a_record_of_the_types_cedar_has() {
        let ty = InputType::of_schema(&expense()).unwrap();
        assert_eq!(
            ty.cedar(),
            r#"{ "amount": Long, "currency": String, "payee"?: { "id": String }, "tags"?: Set<String>, "urgent"?: Bool }"#
        );
        assert!(InputType::of_schema(&json!({"type": "string"})).is_err());
        assert_eq!(
            InputType::of_schema(&json!({"type": "object"}))
                .unwrap()
                .cedar(),
            "{}"
        );
    }

    #[test]
    fn projection_keeps_what_policies_see_and_says_where_input_does_not_fit() {
        let ty = InputType::of_schema(&expense()).unwrap();
        let projected = ty
            .project(&json!({"amount": 12.0, "currency": "EUR", "ratio": 0.5, "extra": [1]}))
            .unwrap();
        assert_eq!(projected, json!({"amount": 12, "currency": "EUR"}));
        let missing = ty.project(&json!({"amount": 1})).unwrap_err();
        assert_eq!(missing.to_string(), "/currency: is required");
        let wrong = ty
            .project(&json!({"amount": 1, "currency": "EUR", "tags": ["a", 2]}))
            .unwrap_err();
        assert_eq!(
            wrong.to_string(),
            "/tags/1: expected a string, found a number"
        );
        let huge = ty
            .project(&json!({"amount": 1e300, "currency": "EUR"}))
            .unwrap_err();
        assert_eq!(huge.path, "/amount");
        assert_eq!(
            ty.project(&json!([])).unwrap_err().to_string(),
            "/: expected an object, found an array"
        );
    }

    #[test]
    fn the_fragment_declares_one_action_per_plugin_but_dispatch() {
        let ty = InputType::of_schema(&expense()).unwrap();
        let plugins = BTreeMap::from([
            ("approve-expense".to_owned(), ty.clone()),
            ("dispatch".to_owned(), ty),
        ]);
        let fragment = plugin_actions_fragment(&plugins);
        assert!(fragment.contains("action \"approve-expense\" in [Action::\"dispatch\"]"));
        assert!(!fragment.contains("action \"dispatch\""));
    }
}
