//! Hostile test plugin: misuses inference on the `support-intent` model.
//!
//! - `{"rows": N}` runs the model once on N rows at once (a huge tensor);
//! - `{"calls": N}` runs it N times on one row, in a loop;
//! - `{"model": "name"}` loads that model instead;
//! - `{"input": "name"}` names the input tensor otherwise than `features`;
//! - `{"hoard": N}` creates N tensors of `rows` rows and keeps them all,
//!   without running the model (host memory, if the host let it);
//! - `{"rank": N}` creates one tensor of N dimensions (of 1);
//! - `"keep_going": true` ignores each failure and answers anyway, so the
//!   host, not the plugin, must report what went wrong.
//!
//! It answers how many calls succeeded and the errors it saw.

use agent_plugin_sdk::inference::wasi_nn::tensor;
use agent_plugin_sdk::inference::{Model, Tensor};
use agent_plugin_sdk::{Error, Plugin, Request, Response, export_plugin};
use serde::Deserialize;

const WIDTH: usize = 1024;

#[derive(Deserialize)]
struct Input {
    #[serde(default = "one")]
    rows: u32,
    #[serde(default = "one")]
    calls: u64,
    #[serde(default = "support_intent")]
    model: String,
    #[serde(default = "features")]
    input: String,
    #[serde(default)]
    hoard: u32,
    #[serde(default)]
    rank: usize,
    #[serde(default)]
    keep_going: bool,
}

fn one<T: From<u8>>() -> T {
    T::from(1)
}

fn support_intent() -> String {
    "support-intent".into()
}

fn features() -> String {
    "features".into()
}

struct InferenceAbuse;

impl Plugin for InferenceAbuse {
    fn reason(request: Request) -> Result<Response, Error> {
        let input: Input = request.input()?;
        if input.rank > 0 {
            let tensor =
                tensor::Tensor::new(&vec![1; input.rank], tensor::TensorType::Fp32, &[0; 4]);
            return Response::json(&serde_json::json!({ "rank": tensor.dimensions().len() }));
        }
        if input.hoard > 0 {
            let values = vec![0u8; input.rows as usize * WIDTH * 4];
            let dimensions = [input.rows, WIDTH as u32];
            let hoard: Vec<tensor::Tensor> = (0..input.hoard)
                .map(|_| tensor::Tensor::new(&dimensions, tensor::TensorType::Fp32, &values))
                .collect();
            return Response::json(&serde_json::json!({ "tensors": hoard.len() }));
        }
        let mut errors = Vec::new();
        let mut done = 0u64;
        let model = Model::load(&input.model);
        if let Ok(model) = &model {
            let values = vec![0.01f32; input.rows as usize * WIDTH];
            for _ in 0..input.calls {
                let tensor = Tensor::f32(&[input.rows, WIDTH as u32], &values);
                match model.infer(&[(input.input.as_str(), tensor)]) {
                    Ok(_) => done += 1,
                    Err(error) if input.keep_going => errors.push(error.to_string()),
                    Err(error) => return Err(error),
                }
            }
        } else if let Err(error) = model {
            if !input.keep_going {
                return Err(error);
            }
            errors.push(error.to_string());
        }
        Response::json(&serde_json::json!({ "calls_done": done, "errors": errors }))
    }
}

export_plugin!(InferenceAbuse);
