//! Checks of configured numbers against their documented bounds (`configs/README.md`), with
//! messages that name the field: shared by the config types of every module.

/// `v` for a message: plain for ordinary magnitudes, in scientific notation otherwise
/// (`1e308`, not 309 digits).
pub(crate) fn show(v: f64) -> String {
    if v != 0.0 && v.is_finite() && !(1e-4..1e6).contains(&v.abs()) {
        format!("{v:e}")
    } else {
        v.to_string()
    }
}

/// `field` must be finite, above `lo` (or equal to it unless `lo_open`) and at most `hi`.
pub(crate) fn in_range(
    field: &str,
    v: f64,
    lo: f64,
    lo_open: bool,
    hi: f64,
) -> std::result::Result<(), String> {
    let above = if lo_open { v > lo } else { v >= lo };
    if above && v <= hi {
        return Ok(());
    }
    let bracket = if lo_open { "(" } else { "[" };
    Err(format!(
        "{field} must be a number in {bracket}{}, {}], got {}",
        show(lo),
        show(hi),
        show(v)
    ))
}

/// `field` must be in `[lo, hi)`.
pub(crate) fn in_range_open(
    field: &str,
    v: f64,
    lo: f64,
    hi: f64,
) -> std::result::Result<(), String> {
    if v >= lo && v < hi {
        return Ok(());
    }
    Err(format!(
        "{field} must be a number in [{}, {}), got {}",
        show(lo),
        show(hi),
        show(v)
    ))
}
