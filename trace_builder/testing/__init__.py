"""Test doubles, shipped so that scripts/benchmarks and users' own tests can use them."""
