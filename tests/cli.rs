//! The `kuant` binary as a user meets it.

use std::process::Command;

fn kuant(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kuant")).args(args).output().expect("kuant runs")
}

#[test]
fn crd_prints_the_three_committed_crds() {
    let out = kuant(&["crd"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/kuant/crds/");
    let mut expected = String::new();
    for name in
        ["backtests.kuant.dev.yaml", "tradingsessions.kuant.dev.yaml", "reconciliations.kuant.dev.yaml"]
    {
        expected.push_str("---\n");
        expected.push_str(&std::fs::read_to_string(format!("{dir}{name}")).expect("committed CRD"));
    }
    assert_eq!(stdout, expected);
}

#[test]
fn roles_that_are_not_built_yet_fail_loudly() {
    for args in [&["operator"][..], &["ops-api"], &["agent", "backtest"], &["agent", "session"]] {
        let out = kuant(args);
        assert_eq!(out.status.code(), Some(3), "{args:?} must not pretend to succeed");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("is not implemented yet"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_broken_manifest_exits_2_with_a_one_line_error() {
    let dir = std::env::temp_dir().join(format!("kuant-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("bad.yaml");
    std::fs::write(
        &file,
        "apiVersion: kuant.dev/v1alpha1\nkind: Backtest\nmetadata: {name: bad}\nspec:\n  strategy: {name: sma-crossover}\n  market: {symbols: [BTCUSDT], timeframe: 2h}\n  portfolio: {initialCash: \"100\"}\n",
    )
    .expect("write manifest");
    let out = kuant(&["backtest", "-f", file.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("bad.yaml: spec.market.timeframe: Unsupported value: \"2h\""), "{stderr}");

    let out = kuant(&["backtest", "-f", dir.join("missing.yaml").to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn help_lists_every_subcommand() {
    let out = kuant(&["--help"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for sub in ["crd", "operator", "agent", "ops-api", "backtest"] {
        assert!(stdout.contains(sub), "{sub} missing from --help:\n{stdout}");
    }
}
