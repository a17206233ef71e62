//! The layer tier: tokio's task spans as polls, wakes as scheduling delays, composition with
//! other layers.

mod console;
mod layer;
mod support;
