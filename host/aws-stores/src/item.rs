//! DynamoDB items as both stores read and write them: attribute values, and
//! typed reads of an item's attributes that say what is corrupt.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

pub(crate) type Item = HashMap<String, AttributeValue>;

pub(crate) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(crate) fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// An attribute that is missing or of the wrong type; each store turns it
/// into its own "corrupt" error.
#[derive(Debug)]
pub(crate) struct BadAttribute {
    /// The item, for people (`policy set version 3`, `plugin echo`).
    pub what: String,
    pub name: String,
}

impl BadAttribute {
    pub fn reason(&self) -> String {
        format!("attribute `{}` is missing or of the wrong type", self.name)
    }
}

/// The attributes of one item.
pub(crate) struct Fields<'a> {
    pub item: &'a Item,
    pub what: &'a str,
}

impl Fields<'_> {
    pub fn text(&self, name: &str) -> Result<String, BadAttribute> {
        match self.item.get(name) {
            Some(AttributeValue::S(text)) => Ok(text.clone()),
            _ => Err(self.bad(name)),
        }
    }

    pub fn optional_text(&self, name: &str) -> Result<Option<String>, BadAttribute> {
        match self.item.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(_) => self.text(name).map(Some),
        }
    }

    pub fn number(&self, name: &str) -> Result<u64, BadAttribute> {
        match self.item.get(name) {
            Some(AttributeValue::N(text)) => text.parse().map_err(|_| self.bad(name)),
            _ => Err(self.bad(name)),
        }
    }

    pub fn optional_number(&self, name: &str) -> Result<Option<u64>, BadAttribute> {
        match self.item.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(_) => self.number(name).map(Some),
        }
    }

    pub fn flag(&self, name: &str) -> Result<bool, BadAttribute> {
        match self.item.get(name) {
            Some(AttributeValue::Bool(value)) => Ok(*value),
            _ => Err(self.bad(name)),
        }
    }

    pub fn bad(&self, name: &str) -> BadAttribute {
        BadAttribute {
            what: self.what.to_owned(),
            name: name.to_owned(),
        }
    }
}
