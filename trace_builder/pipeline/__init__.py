"""The data pipeline: seeds -> taxonomy -> expand -> respond -> perturb -> filter."""
