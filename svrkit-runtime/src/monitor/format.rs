//! How pages, alarms and reports write figures: one function per kind of figure, so that
//! the same number reads the same everywhere (the alarm row, the chart beside it, the
//! ossagent's table).

/// `14:03`: the UTC time of day of a minute since the Unix epoch (pages say UTC).
pub fn clock(minute: u64) -> String {
    format!("{:02}:{:02}", minute / 60 % 24, minute % 60)
}

/// `v` to at most three significant digits, with no digits after the point beyond them (nor
/// trailing zeros) and none invented before it: `12.9`, `1.86`, `0.0123`, `0.1`, `350`,
/// `12300`.
pub fn significant(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    if v == 0.0 {
        return "0".into();
    }
    let rounded = round3(v);
    let digits = |x: f64| x.abs().log10().floor() as i32;
    let decimals = (2 - digits(rounded)).max(0) as usize;
    let text = format!("{rounded:.decimals$}");
    // Zeros after the point say nothing a reader needs: `0.1%`, not `0.100%`.
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

/// `v` rounded to three significant digits (first, so that 9.996 reads 10, not 10.00).
fn round3(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let scale = 10f64.powi(2 - v.abs().log10().floor() as i32);
    (v * scale).round() / scale
}

/// A fraction as a percentage to three significant digits: `12.9%`, `0.05%`.
pub fn percent(v: f64) -> String {
    format!("{}%", significant(v * 100.0))
}

/// A latency given in milliseconds, in the unit that suits it: `35.2 µs`, `1.86 ms`,
/// `10 s`.
pub fn millis(ms: f64) -> String {
    // The unit is chosen after rounding: 999.6 ms reads 1 s, not 1000 ms.
    let rounded = round3(ms);
    if rounded >= 1000.0 {
        format!("{} s", significant(ms / 1000.0))
    } else if rounded > 0.0 && rounded < 1.0 {
        format!("{} µs", significant(ms * 1000.0))
    } else {
        format!("{} ms", significant(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_to_three_significant_digits() {
        assert_eq!(significant(12.94), "12.9");
        assert_eq!(significant(1.8612), "1.86");
        assert_eq!(significant(0.012345), "0.0123");
        assert_eq!(significant(9.996), "10");
        assert_eq!(significant(0.1), "0.1");
        assert_eq!(significant(2.50), "2.5");
        assert_eq!(significant(350.4), "350");
        assert_eq!(significant(12_345.0), "12300");
        assert_eq!(significant(0.0), "0");
        assert_eq!(percent(0.129), "12.9%");
        assert_eq!(millis(10_000.0), "10 s");
        assert_eq!(millis(0.0352), "35.2 µs");
        assert_eq!(millis(1.86), "1.86 ms");
        assert_eq!(millis(999.6), "1 s");
        assert_eq!(millis(0.9996), "1 ms");
        assert_eq!(clock(60 * 24 * 3 + 14 * 60 + 3), "14:03");
    }
}
