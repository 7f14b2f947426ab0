//! One module per virtctl verb.

pub mod validate;
