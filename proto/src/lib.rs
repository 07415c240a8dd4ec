//! Admission API generated from `llmgateway/admission/v1/admission.proto`.

#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/llmgateway.admission.v1.rs"));
}
