//! UTC timestamps without a time-zone database.

/// `2026-11-25T21:16:03Z` for seconds since the Unix epoch.
pub fn utc(unix: u64) -> String {
    let (year, month, day) = ferry_engine::calendar::civil_from_days((unix / 86_400) as i64);
    let secs = unix % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_known_instants() {
        assert_eq!(super::utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::utc(1_795_641_363), "2026-11-25T21:16:03Z");
    }
}
