//! Where a local backtest is saved: `--store URL`, else `KUANT_DATABASE_URL`, else a SQLite file
//! in the user's data folder (`$XDG_DATA_HOME/kuant/kuant.db`, by default
//! `~/.local/share/kuant/kuant.db`). `--no-store` skips saving. What is saved, and retention:
//! [`kuant_agents::backtest::persist`].

use std::path::PathBuf;

/// The store a local run goes to: the flag, the environment, or the default file.
pub fn location(flag: Option<&str>) -> Result<String, String> {
    if let Some(url) = flag.filter(|u| !u.is_empty()) {
        return Ok(url.to_owned());
    }
    if let Ok(url) = std::env::var("KUANT_DATABASE_URL")
        && !url.is_empty()
    {
        return Ok(url);
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .ok_or("no data folder (set HOME or XDG_DATA_HOME, or pass --store URL)")?;
    let dir = base.join("kuant");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir.join("kuant.db").to_string_lossy().into_owned())
}
