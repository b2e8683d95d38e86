//! Checks of a Backtest's spec that the CRD schema and its CEL rules cannot make: the same
//! checks `kuant backtest -f` makes locally, so a spec refused here is refused there too.

use kuant_crds::BacktestSpec;
use kuant_crds::backtest::DataSource;

/// Why the spec cannot run, in one sentence; `Ok` when it can.
pub fn spec(spec: &BacktestSpec) -> Result<(), String> {
    kuant_agents::strategy::build(spec.strategy.name, &spec.strategy.params).map_err(|e| e.to_string())?;
    if spec.data.source == DataSource::Csv && spec.data.csv.is_none() {
        return Err("data.source is csv but data.csv.path is missing".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backtest::fixtures;

    #[test]
    fn the_example_is_valid() {
        assert_eq!(spec(&fixtures::backtest("x").spec), Ok(()));
    }

    #[test]
    fn strategy_parameters_are_checked_with_the_engines_message() {
        let mut bt = fixtures::backtest("x");
        bt.spec.strategy.params.insert("fast".into(), 40.0);
        assert_eq!(
            spec(&bt.spec),
            Err("strategy sma-crossover: fast (40) must be less than slow (30)".into())
        );
        bt.spec.strategy.params.insert("speed".into(), 1.0);
        assert!(spec(&bt.spec).expect_err("unknown").contains("unknown parameter \"speed\""));
    }

    #[test]
    fn a_csv_source_needs_its_path() {
        let mut bt = fixtures::backtest("x");
        bt.spec.data.source = DataSource::Csv;
        assert!(spec(&bt.spec).expect_err("no csv").contains("data.csv.path"));
    }
}
