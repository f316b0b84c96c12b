//! Inference on models the host owns, through the standard `wasi:nn`
//! interface (`wit/deps/wasi-nn`). Turn on the SDK's `inference` feature and
//! declare the capability and the models in `plugin.toml`:
//!
//! ```toml
//! capabilities = ["inference"]
//! [inference]
//! models = { support-intent = "1.0.0" }
//! ```
//!
//! A plugin never ships weights: it loads a model by name, and the host
//! gives it the version its manifest pins, verified against its signed
//! manifest. Every call is bounded by the host: past the input size, the
//! model's batch or the calls per request, the request fails with
//! `PLUGIN_RESOURCE_LIMIT`, whatever the plugin does with the error it sees
//! (and so past the bytes of tensors a request may create, or 8 dimensions
//! in a tensor, where creating the tensor traps);
//! a model at its limit of calls at once fails it with `503 OVERLOADED`
//! (retry).
//!
//! ```no_run
//! use agent_plugin_sdk::inference::{Model, Tensor};
//!
//! # fn run() -> Result<(), agent_plugin_sdk::Error> {
//! let model = Model::load("support-intent")?;
//! let features = vec![0.0; 1024];
//! let outputs = model.infer(&[("features", Tensor::f32(&[1, 1024], &features))])?;
//! let intent = outputs.f32("intent")?;
//! # Ok(()) }
//! ```

use crate::Error;

mod nn {
    wit_bindgen::generate!({
        path: "../../wit/deps/wasi-nn",
        world: "wasi:nn/ml",
    });
}

use nn::wasi::nn::{errors, graph, inference, tensor};

/// The `wasi:nn` bindings themselves, for what [`Model`] does not cover.
pub use nn::wasi::nn as wasi_nn;

/// A model loaded by name, ready for inference.
pub struct Model {
    name: String,
    graph: graph::Graph,
}

/// An input tensor: dimensions and little-endian element bytes.
pub struct Tensor {
    dimensions: Vec<u32>,
    ty: tensor::TensorType,
    data: Vec<u8>,
}

impl Tensor {
    /// A tensor of 32-bit floats, `values` in row-major order.
    pub fn f32(dimensions: &[u32], values: &[f32]) -> Self {
        Self {
            dimensions: dimensions.to_vec(),
            ty: tensor::TensorType::Fp32,
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
}

/// The named output tensors of one inference.
pub struct Outputs {
    model: String,
    tensors: Vec<(String, tensor::Tensor)>,
}

impl Outputs {
    /// The output `name` as 32-bit floats, in row-major order.
    pub fn f32(&self, name: &str) -> Result<Vec<f32>, Error> {
        let (_, tensor) = self
            .tensors
            .iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| {
                Error::failed(format!("model `{}` has no output `{name}`", self.model))
            })?;
        if tensor.ty() != tensor::TensorType::Fp32 {
            return Err(Error::failed(format!(
                "output `{name}` of model `{}` is not 32-bit float",
                self.model
            )));
        }
        Ok(tensor
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    /// The dimensions of the output `name`, if there is one.
    pub fn dimensions(&self, name: &str) -> Option<Vec<u32>> {
        self.tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.dimensions())
    }
}

impl Model {
    /// The model `name`, at the version the plugin's manifest pins.
    pub fn load(name: &str) -> Result<Self, Error> {
        let graph = graph::load_by_name(name).map_err(|e| failure(name, "load", &e))?;
        Ok(Self {
            name: name.to_owned(),
            graph,
        })
    }

    /// Runs the model on named inputs and returns its outputs.
    pub fn infer(&self, inputs: &[(&str, Tensor)]) -> Result<Outputs, Error> {
        let context = self
            .graph
            .init_execution_context()
            .map_err(|e| failure(&self.name, "start", &e))?;
        let inputs: Vec<inference::NamedTensor> = inputs
            .iter()
            .map(|(name, t)| {
                let tensor = tensor::Tensor::new(&t.dimensions, t.ty, &t.data);
                ((*name).to_owned(), tensor)
            })
            .collect();
        let tensors = context
            .compute(inputs)
            .map_err(|e| failure(&self.name, "run", &e))?;
        Ok(Outputs {
            model: self.name.clone(),
            tensors,
        })
    }
}

fn failure(model: &str, what: &str, error: &errors::Error) -> Error {
    Error::failed(format!(
        "cannot {what} model `{model}`: {:?}: {}",
        error.code(),
        error.data()
    ))
}
