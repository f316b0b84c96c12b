//! Support-message triage with a model: the intent (account, billing,
//! cancellation, shipping, technical) and the urgency (high, low, normal)
//! of a message, from the host-owned `support-intent` model through
//! `wasi:nn`. The plugin computes the features; the host runs the model.

mod features;

use agent_plugin_sdk::inference::{Model, Tensor};
use agent_plugin_sdk::{Error, Plugin, Request, Response, config, export_plugin};
use serde::Deserialize;
use serde_json::{Map, json};

type Scores = Map<String, serde_json::Value>;

#[derive(Deserialize)]
struct Input {
    message: String,
}

struct SupportIntent;

impl Plugin for SupportIntent {
    fn reason(request: Request) -> Result<Response, Error> {
        let input: Input = request.input()?;
        let intents = labels("intents")?;
        let urgencies = labels("urgencies")?;
        let model = Model::load("support-intent")?;
        let features = features::features(&input.message);
        let outputs = model.infer(&[(
            "features",
            Tensor::f32(&[1, features::DIMENSIONS as u32], &features),
        )])?;
        let (intent, confidence, intent_scores) = best(&intents, &outputs.f32("intent")?)?;
        let (urgency, _, urgency_scores) = best(&urgencies, &outputs.f32("urgency")?)?;
        Response::json(&json!({
            "intent": intent,
            "urgency": urgency,
            "scores": { "intent": intent_scores, "urgency": urgency_scores },
        }))
        .map(|r| r.with_confidence(f64::from(confidence).clamp(0.0, 1.0)))
    }
}

/// The operator-set class names `key`, in the model's output order.
fn labels(key: &str) -> Result<Vec<String>, Error> {
    config::get_json(key)?.ok_or_else(|| Error::failed(format!("config `{key}` is not set")))
}

/// The most probable class, its probability and every class's.
fn best(labels: &[String], scores: &[f32]) -> Result<(String, f32, Scores), Error> {
    if labels.len() != scores.len() {
        return Err(Error::failed(format!(
            "the model gave {} scores for {} classes",
            scores.len(),
            labels.len()
        )));
    }
    let mut top = 0;
    for (i, score) in scores.iter().enumerate() {
        if *score > scores[top] {
            top = i;
        }
    }
    let all = labels
        .iter()
        .zip(scores)
        .map(|(label, score)| (label.clone(), json!(score)))
        .collect();
    Ok((labels[top].clone(), scores[top], all))
}

export_plugin!(SupportIntent);
