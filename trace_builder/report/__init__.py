"""What a run shows and hands over: status, inspect, the record viewer, the dataset card, fidelity, exports."""
