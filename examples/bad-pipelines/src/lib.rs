//! Async pipelines with one real, common defect each and a fixed twin, run by
//! `asyncprof bench`. They are its demo, its regression suite and its ground truth.
//!
//! Each pipeline is a module with a `bad` and a `fixed` variant. The defect's line carries a
//! marker comment, `// asyncprof-expect: KIND` (for example `blocking-call`), which scoring
//! reads; fixed twins carry none. The registry below lists the pipelines `bench` can run.

/// A pipeline variant: the defect, or its fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The pipeline with its defect.
    Bad,
    /// The fixed twin.
    Fixed,
}

/// The registered pipelines' names. The pipelines themselves are added one module each.
pub const PIPELINES: &[&str] = &[];
