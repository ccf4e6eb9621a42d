"""End-to-end experiments: data, fit, evaluate and render for one system each."""
