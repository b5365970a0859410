//! Reading the relay's Prometheus text in tests: a value, or a failure naming the missing line.
//! (A bare `contains("name 0")` passes when the line is not there at all.)

/// The value on the line that starts with `line_start` (the metric name with its labels, as
/// rendered); panics when no such line exists or its value is not a whole number.
pub fn metric(text: &str, line_start: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
}
