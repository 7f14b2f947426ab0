//! One module per virtctl verb.

pub mod local;
pub mod validate;
