//! `triage`: a rule-based classifier for support messages, driven by plugin config.
//!
//! Input `{"subject": "...", "body": "..."}` (either may be omitted, not both).
//! Output `{"category", "priority", "matched": [...], "scores": {category: n}}`.
//!
//! Config (set by the operator per deployed version, JSON values):
//! - `rules`: `{"category": ["term", ...], ...}`; a message scores one point per
//!   occurrence of a term (whole words, case-insensitive); the highest score wins,
//!   ties go to the category named first alphabetically.
//! - `urgent_terms`: `["urgent", ...]`; any occurrence makes the priority `high`.
//! - `high_priority_categories`: `["outage", ...]`; these are always `high`.
//! - `default_category`: used when nothing matches (default `general`).

use std::collections::BTreeMap;

use agent_plugin_sdk::{Error, Plugin, Request, Response, config, export_plugin};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    #[serde(default)]
    subject: String,
    #[serde(default)]
    body: String,
}

#[derive(Serialize, Debug, PartialEq)]
struct Verdict {
    category: String,
    priority: &'static str,
    matched: Vec<String>,
    scores: BTreeMap<String, usize>,
}

struct Rules {
    categories: BTreeMap<String, Vec<String>>,
    urgent_terms: Vec<String>,
    high_priority_categories: Vec<String>,
    default_category: String,
}

impl Rules {
    fn from_config() -> Result<Self, Error> {
        let categories: BTreeMap<String, Vec<String>> =
            config::get_json("rules")?.unwrap_or_default();
        if categories.is_empty() {
            return Err(Error::failed("plugin config `rules` is missing or empty"));
        }
        Ok(Self {
            categories: lower_all(categories),
            urgent_terms: lowered(config::get_json("urgent_terms")?.unwrap_or_default()),
            high_priority_categories: config::get_json("high_priority_categories")?
                .unwrap_or_default(),
            default_category: config::get("default_category").unwrap_or_else(|| "general".into()),
        })
    }

    fn classify(&self, text: &str) -> Verdict {
        let words: Vec<String> = text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        let occurrences = |term: &str| words.iter().filter(|w| w.as_str() == term).count();

        let mut scores = BTreeMap::new();
        let mut matched = Vec::new();
        for (category, terms) in &self.categories {
            let mut score = 0;
            for term in terms {
                let n = occurrences(term);
                if n > 0 {
                    score += n;
                    matched.push(term.clone());
                }
            }
            scores.insert(category.clone(), score);
        }
        // Highest score wins; `max_by` keeps the last maximum, so iterate in reverse
        // to let the alphabetically first category win ties.
        let category = scores
            .iter()
            .rev()
            .filter(|(_, score)| **score > 0)
            .max_by_key(|(_, score)| **score)
            .map(|(c, _)| c.clone())
            .unwrap_or_else(|| self.default_category.clone());
        let urgent = self.urgent_terms.iter().any(|t| occurrences(t) > 0);
        let priority = if urgent || self.high_priority_categories.contains(&category) {
            "high"
        } else if category == self.default_category {
            "low"
        } else {
            "normal"
        };
        matched.sort();
        matched.dedup();
        Verdict {
            category,
            priority,
            matched,
            scores,
        }
    }
}

fn lowered(terms: Vec<String>) -> Vec<String> {
    terms.into_iter().map(|t| t.to_lowercase()).collect()
}

fn lower_all(categories: BTreeMap<String, Vec<String>>) -> BTreeMap<String, Vec<String>> {
    categories
        .into_iter()
        .map(|(c, terms)| (c, lowered(terms)))
        .collect()
}

struct Triage;

impl Plugin for Triage {
    fn reason(request: Request) -> Result<Response, Error> {
        let input: Input = request.input()?;
        if input.subject.trim().is_empty() && input.body.trim().is_empty() {
            return Err(Error::invalid_input(
                "give a `subject` or a `body` to classify",
            ));
        }
        let rules = Rules::from_config()?;
        let verdict = rules.classify(&format!("{}\n{}", input.subject, input.body));
        let total: usize = verdict.scores.values().sum();
        let winning = verdict.scores.get(&verdict.category).copied().unwrap_or(0);
        let confidence = if total == 0 {
            0.0
        } else {
            winning as f64 / total as f64
        };
        Response::json(&verdict).map(|r| r.with_confidence(confidence))
    }
}

export_plugin!(Triage);

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        let mut categories = BTreeMap::new();
        categories.insert("billing".into(), vec!["invoice".into(), "refund".into()]);
        categories.insert("outage".into(), vec!["down".into(), "outage".into()]);
        Rules {
            categories,
            urgent_terms: vec!["urgent".into()],
            high_priority_categories: vec!["outage".into()],
            default_category: "general".into(),
        }
    }

    #[test]
    fn highest_score_wins() {
        let v = rules().classify("Refund please, the invoice is wrong. Site was down.");
        assert_eq!(v.category, "billing");
        assert_eq!(v.priority, "normal");
        assert_eq!(v.matched, ["down", "invoice", "refund"]);
    }

    #[test]
    fn ties_go_to_the_first_category_and_urgent_raises_priority() {
        let v = rules().classify("URGENT: refund, and the api is down");
        assert_eq!(v.category, "billing");
        assert_eq!(v.priority, "high");
    }

    #[test]
    fn nothing_matched_is_the_default_with_low_priority() {
        let v = rules().classify("hello there");
        assert_eq!(v.category, "general");
        assert_eq!(v.priority, "low");
        let v = rules().classify("everything is down");
        assert_eq!((v.category.as_str(), v.priority), ("outage", "high"));
    }
}
