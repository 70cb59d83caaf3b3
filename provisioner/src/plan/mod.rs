//! The plan: a sealed petgraph DAG of (host, step) nodes.
