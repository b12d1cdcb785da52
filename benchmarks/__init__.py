"""Reference implementations and benchmarks of the indicator marts, outside dbt."""
