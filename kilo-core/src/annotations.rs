//! The `kilo.squat.ai/*` annotation codec (filled by the annotations work).
