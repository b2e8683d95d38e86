//! `../shared/data`, the real candles beside the clone, as the tests find it.

use std::path::Path;

/// `../shared/data/<file>`, or `None` (a skip, with a message) where a clone has no shared data;
/// `KUANT_REQUIRE_SHARED_DATA=1` (set by `.ci/run`) makes its absence a failure.
pub fn shared_data(file: &str) -> Option<String> {
    let dir = std::env::var("KUANT_SHARED_DATA")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data").to_owned());
    let path = Path::new(&dir).join(file);
    if path.is_file() {
        return Some(path.to_string_lossy().into_owned());
    }
    assert!(
        std::env::var("KUANT_REQUIRE_SHARED_DATA").as_deref() != Ok("1"),
        "{} is missing and KUANT_REQUIRE_SHARED_DATA=1",
        path.display()
    );
    eprintln!("skipped: {} not found", path.display());
    None
}
