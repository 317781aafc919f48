//! Data loading (to come).
